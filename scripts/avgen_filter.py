"""Entry point of AVGen's filter stage (rules/avgen/); the logic is in avgen.data.filter."""
from avgen.data.filter import main

if __name__ == "__main__":
    main()
