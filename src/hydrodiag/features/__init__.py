"""Sensor series -> fixed windows; topology + windows -> graph tensors the model reads."""
