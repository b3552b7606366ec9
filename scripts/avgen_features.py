"""Entry point of AVGen's features stage (rules/avgen/); the logic is in avgen.features.features."""
from avgen.features.features import main

if __name__ == "__main__":
    main()
