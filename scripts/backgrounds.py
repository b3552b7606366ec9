"""Entry point of the backgrounds stage (rules/backgrounds.smk); the logic lives in pvtt/backgrounds.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.backgrounds import main  # noqa: E402

if __name__ == "__main__":
    main()
