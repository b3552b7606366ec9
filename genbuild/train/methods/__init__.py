"""Training methods: each owns its networks' losses and one optimisation step."""
