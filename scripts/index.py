"""Entry point of the index stage (rules/index.smk); the logic lives in pvtt/index.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.index import main  # noqa: E402

if __name__ == "__main__":
    main()
