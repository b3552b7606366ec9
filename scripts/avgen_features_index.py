"""Entry point of AVGen's features_index stage (rules/avgen/); the logic is in avgen.features.index."""
from avgen.features.index import main

if __name__ == "__main__":
    main()
