"""Entry point of the clips stage (rules/pvtt/); the logic is in pvtt.data.clips."""
from pvtt.data.clips import main

if __name__ == "__main__":
    main()
