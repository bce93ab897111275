"""kappaflow: one set of Apache Beam transforms for batch, streaming replay and live streaming."""

import warnings

# See pipelines/__init__.py: Google's clients warn about Beam's grpcio pin on every import.
warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(grpcio|Post-Quantum).*")

__version__ = "0.1.0"
