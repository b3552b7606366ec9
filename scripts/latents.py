"""Entry point of the latent cache stage (rules/latents.smk); the logic is in pvtt.latents."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvtt.latents import main  # noqa: E402

if __name__ == "__main__":
    main()
