"""Entry point of the eval stage (rules/pvtt/); the logic is in pvtt.eval.eval."""
from pvtt.eval.eval import main

if __name__ == "__main__":
    main()
