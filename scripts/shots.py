"""Entry point of the shots stage (rules/shots.smk); the logic lives in pvtt/shots.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.shots import main  # noqa: E402

if __name__ == "__main__":
    main()
