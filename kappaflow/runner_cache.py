"""Where the set-up scripts keep runner binaries: $KAPPAFLOW_CACHE, default `<repo>/.cache`.

scripts/common.sh uses the same rule, so the package finds what `make runners` installed.
"""

from __future__ import annotations

import os

import apache_beam

__all__ = ["BEAM_VERSION", "RunnerNotInstalled", "cache_dir", "require"]

BEAM_VERSION: str = apache_beam.__version__
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RunnerNotInstalled(RuntimeError):
    """A runner's binaries are missing; the message names the command that installs them."""


def cache_dir() -> str:
    return os.environ.get("KAPPAFLOW_CACHE") or os.path.join(_REPO, ".cache")


def require(path: str, what: str, make_target: str) -> str:
    if not os.path.exists(path):
        raise RunnerNotInstalled(
            f"{what} is not installed (looked for {path}). Install it with `make {make_target}` "
            f"(in {_REPO}; it runs scripts/{make_target}.sh), or set $KAPPAFLOW_CACHE to where it is.")
    return path
