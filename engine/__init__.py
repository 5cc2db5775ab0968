"""Junction: a healthcare interface engine."""

__version__ = "0.1.0"
