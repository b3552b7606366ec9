"""Stage entry point: see pvtt/synth.py (rules/synth.smk calls this)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.synth import main  # noqa: E402

if __name__ == "__main__":
    main()
