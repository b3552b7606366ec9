"""Entry point of the maskqc stage (rules/pvtt/); the logic is in pvtt.data.maskqc."""
from pvtt.data.maskqc import main

if __name__ == "__main__":
    main()
