"""Entry point of the masks stage (rules/masks.smk); the logic lives in pvtt/masks.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.masks import main  # noqa: E402

if __name__ == "__main__":
    main()
