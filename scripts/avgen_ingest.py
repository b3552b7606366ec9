"""Entry point of AVGen's ingest stage (rules/avgen/); the logic is in avgen.data.ingest."""
from avgen.data.ingest import main

if __name__ == "__main__":
    main()
