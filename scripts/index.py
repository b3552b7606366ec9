"""Entry point of the index stage (rules/pvtt/); the logic is in pvtt.data.index."""
from pvtt.data.index import main

if __name__ == "__main__":
    main()
