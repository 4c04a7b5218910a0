"""RIX, the Regional Imaging eXchange."""

__version__ = "0.1.0"
