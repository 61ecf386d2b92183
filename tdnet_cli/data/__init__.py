"""Datasets: the Cityscapes label set and layout, synthetic scenes, transforms."""
