"""Entry point of the teacher stage (rules/pvtt/); the logic is in pvtt.train.teacher."""
from pvtt.train.teacher import main

if __name__ == "__main__":
    main()
