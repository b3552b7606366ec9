"""Entry point of the sample stage (rules/pvtt/); the logic is in pvtt.data.sample."""
from pvtt.data.sample import main

if __name__ == "__main__":
    main()
