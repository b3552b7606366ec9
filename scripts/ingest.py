"""Entry point of the ingest stage (rules/ingest.smk); the logic lives in pvtt/ingest.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.ingest import main  # noqa: E402

if __name__ == "__main__":
    main()
