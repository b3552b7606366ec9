"""Entry point of the teacher stage (rules/teacher.smk); the logic is in pvtt.teacher."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.teacher import main  # noqa: E402

if __name__ == "__main__":
    main()
