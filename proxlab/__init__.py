"""proxlab: a research harness for pretraining-data ablations (ProX reproduction and beyond)."""

__version__ = "0.1.0"
