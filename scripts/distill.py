"""Entry point of the distill stage (rules/distill.smk); the logic is in pvtt.distill."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.distill import main  # noqa: E402

if __name__ == "__main__":
    main()
