#!/usr/bin/env python
"""Stage 'pack': see pvtt/pack.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.pack import main  # noqa: E402

if __name__ == "__main__":
    main()
