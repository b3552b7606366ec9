"""Entry point of the synth stage (rules/pvtt/); the logic is in pvtt.data.synth."""
from pvtt.data.synth import main

if __name__ == "__main__":
    main()
