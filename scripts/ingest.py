"""Entry point of the ingest stage (rules/pvtt/); the logic is in pvtt.data.ingest."""
from pvtt.data.ingest import main

if __name__ == "__main__":
    main()
