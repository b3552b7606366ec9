"""Entry point of the products stage (rules/pvtt/); the logic is in pvtt.data.products."""
from pvtt.data.products import main

if __name__ == "__main__":
    main()
