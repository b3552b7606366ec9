"""Entry point of AVGen's format stage (rules/avgen/); the logic is in avgen.data.format."""
from avgen.data.format import main

if __name__ == "__main__":
    main()
