"""Entry point of the backgrounds stage (rules/pvtt/); the logic is in pvtt.data.backgrounds."""
from pvtt.data.backgrounds import main

if __name__ == "__main__":
    main()
