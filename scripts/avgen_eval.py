"""Entry point of AVGen's eval stage (rules/avgen/); the logic is in avgen.eval.eval."""
from avgen.eval.eval import main

if __name__ == "__main__":
    main()
