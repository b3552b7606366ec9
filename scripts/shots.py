"""Entry point of the shots stage (rules/pvtt/); the logic is in pvtt.data.shots."""
from pvtt.data.shots import main

if __name__ == "__main__":
    main()
