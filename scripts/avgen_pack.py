"""Entry point of AVGen's pack stage (rules/avgen/); the logic is in avgen.pack.pack."""
from avgen.pack.pack import main

if __name__ == "__main__":
    main()
