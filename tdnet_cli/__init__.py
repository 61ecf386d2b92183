"""tdnet: fast video semantic segmentation with Temporally Distributed Networks."""

__version__ = "0.1.0"
