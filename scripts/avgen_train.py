"""Entry point of AVGen's train stage (rules/avgen/); the logic is in avgen.train.train."""
from avgen.train.train import main

if __name__ == "__main__":
    main()
