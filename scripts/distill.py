"""Entry point of the distill stage (rules/pvtt/); the logic is in pvtt.train.distill."""
from pvtt.train.distill import main

if __name__ == "__main__":
    main()
