"""Entry point of the clips stage (rules/clips.smk); the logic lives in pvtt/clips.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.clips import main  # noqa: E402

if __name__ == "__main__":
    main()
