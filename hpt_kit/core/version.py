"""The kit's version, recorded in every dataset and checkpoint it writes."""

__version__ = "0.1.0"
