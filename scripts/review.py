"""Entry point of the review stage (rules/pvtt/); the logic is in pvtt.filter.review."""
from pvtt.filter.review import main

if __name__ == "__main__":
    main()
