"""hydrodiag: diagnose hydraulic machines from sensor windows with a temporal graph neural network."""

__version__ = "0.1.0"
