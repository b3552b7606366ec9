"""Entry point of the engine stage (rules/engine.smk); the logic is in pvtt.engine."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.engine import main  # noqa: E402

if __name__ == "__main__":
    main()
