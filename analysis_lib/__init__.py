"""Companion library: CLIP variants with observable attention, the datasets, training and the statistics."""
