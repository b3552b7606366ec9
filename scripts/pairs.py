"""Stage entry point: see pvtt/pairs.py (rules/pairs.smk calls this)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.pairs import main  # noqa: E402

if __name__ == "__main__":
    main()
