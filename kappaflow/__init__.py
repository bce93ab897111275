"""kappaflow: one set of Apache Beam transforms for batch, streaming replay and live streaming."""

__version__ = "0.1.0"
