"""hydrodiag: diagnose hydraulic machines from sensor windows with a temporal graph neural network."""

from hydrodiag.lazy_imports import defer_torch_dynamo

__version__ = "0.1.0"

defer_torch_dynamo()
