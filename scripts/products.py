"""Entry point of the products stage (rules/products.smk); the logic lives in pvtt/products.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.products import main  # noqa: E402

if __name__ == "__main__":
    main()
