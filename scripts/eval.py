"""Entry point of the eval stage (rules/eval.smk); the logic is in pvtt.evaluation."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.evaluation import main  # noqa: E402

if __name__ == "__main__":
    main()
