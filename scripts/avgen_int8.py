"""Entry point of AVGen's int8 stage (rules/avgen/); the logic is in avgen.deploy.int8."""
from avgen.deploy.int8 import main

if __name__ == "__main__":
    main()
