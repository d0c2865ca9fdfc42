"""Data sets turned into labelled graphs."""
