"""Entry point of the latents stage (rules/pvtt/); the logic is in pvtt.train.latents."""
from pvtt.train.latents import main

if __name__ == "__main__":
    main()
