"""Entry point of the engine stage (rules/pvtt/); the logic is in pvtt.deploy.engine."""
from pvtt.deploy.engine import main

if __name__ == "__main__":
    main()
