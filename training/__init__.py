"""Metric learning: descriptors trained on labelled images (`cbir train`)."""
