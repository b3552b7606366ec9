"""Stage entry point: generate the embedded sample (see pvtt/sample.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.sample import main  # noqa: E402

if __name__ == "__main__":
    main()
