"""Entry point of the filter stage (rules/pvtt/); the logic is in pvtt.filter.filter."""
from pvtt.filter.filter import main

if __name__ == "__main__":
    main()
