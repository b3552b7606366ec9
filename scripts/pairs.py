"""Entry point of the pairs stage (rules/pvtt/); the logic is in pvtt.data.pairs."""
from pvtt.data.pairs import main

if __name__ == "__main__":
    main()
