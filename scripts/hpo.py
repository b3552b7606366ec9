"""Entry point of the teacher hyperparameter search; the logic is in pvtt.hpo."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.hpo import main  # noqa: E402

if __name__ == "__main__":
    main()
