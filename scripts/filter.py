#!/usr/bin/env python
"""Stage 'filter': see pvtt/filters.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.filters import main  # noqa: E402

if __name__ == "__main__":
    main()
