"""Entry point of the pack stage (rules/pvtt/); the logic is in pvtt.pack.pack."""
from pvtt.pack.pack import main

if __name__ == "__main__":
    main()
