"""Entry point of the masks stage (rules/pvtt/); the logic is in pvtt.data.masks."""
from pvtt.data.masks import main

if __name__ == "__main__":
    main()
