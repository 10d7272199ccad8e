"""blobflow: runs provider workflows on blob events and stores their deltas."""

__version__ = "0.1.0"
