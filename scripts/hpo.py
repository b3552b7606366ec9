"""Entry point of the hpo stage (rules/pvtt/); the logic is in pvtt.train.hpo."""
from pvtt.train.hpo import main

if __name__ == "__main__":
    main()
