"""Runnable pipelines: `python -m pipelines.<name>`."""

import warnings

# Beam 2.70 pins grpcio below the version Google's client libraries now recommend; they say so
# with a FutureWarning on every import, which buries a run's own output. Nothing to act on per run.
warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(grpcio|Post-Quantum).*")
