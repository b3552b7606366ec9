"""Entry point of the maskqc stage (rules/maskqc.smk); the logic lives in pvtt/maskqc.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.maskqc import main  # noqa: E402

if __name__ == "__main__":
    main()
