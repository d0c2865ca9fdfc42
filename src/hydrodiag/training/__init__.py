"""Training, evaluation and data sets (real UCI data and the physics-based simulator)."""
