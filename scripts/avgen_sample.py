"""Entry point of AVGen's sample stage (rules/avgen/); the logic is in avgen.data.sample."""
from avgen.data.sample import main

if __name__ == "__main__":
    main()
