"""Dataflow flex-template metadata generated from each pipeline's option declarations
(kappaflow/options.py: the `Option` tables of the groups its options class adds up).

    python -m kappaflow.flex_template --write   # regenerate templates/<pipeline>/metadata.json
    python -m kappaflow.flex_template --check   # exit 1 when a file has drifted from the code
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from kappaflow.options import KappaflowOptions, declared_options, default_of

__all__ = ["pipeline_names", "options_class", "template_metadata", "metadata_path"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BOOLEAN = r"^(true|false)$"
# Beam options a template user sets per launch (other Beam options go through gcloud's flags).
_BEAM_PARAMETERS = {
    "streaming": ("Streaming", "Run as a streaming job (Pub/Sub input, or a replay of files).", _BOOLEAN),
}


# The pipelines sit on top of this runtime layer: they are found by name (like console scripts),
# never imported here by a static import (.importlinter).
PIPELINES_PACKAGE = "pipelines"


def pipeline_names() -> list[str]:
    package = importlib.import_module(PIPELINES_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def options_class(name: str) -> type[KappaflowOptions]:
    module = importlib.import_module(f"{PIPELINES_PACKAGE}.{name}")
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, KappaflowOptions) and v.__module__ == module.__name__]
    if len(found) != 1:
        raise LookupError(f"pipelines.{name} must define exactly one KappaflowOptions subclass")
    return found[0]


def flags_of(cls: type[PipelineOptions]) -> frozenset[str]:
    """The flags (--name) of `cls` and its bases, except Beam's own."""
    return frozenset(option.flag for option in declared_options(cls))


def template_metadata(name: str) -> dict[str, Any]:
    cls = options_class(name)
    module = importlib.import_module(f"{PIPELINES_PACKAGE}.{name}")
    summary = (module.__doc__ or name).strip().splitlines()[0]
    parameters = []
    for option in declared_options(cls):
        help_text = option.help
        default = default_of(cls, option)
        if default not in (None, False) and "default:" not in help_text.lower():
            help_text += f" Default: {default:g}." if isinstance(default, float) else f" Default: {default}."
        parameter: dict[str, Any] = {
            "name": option.name,
            "label": option.name.replace("_", " ").capitalize(),
            "helpText": help_text,
            "isOptional": True,  # Beam parses every pipeline's flags, so the launcher checks required ones
        }
        regex = option.template_regex()
        if regex:
            parameter["regexes"] = [regex]
        parameters.append(parameter)
    for dest, (label, help_text, regex) in _BEAM_PARAMETERS.items():
        parameters.append({"name": dest, "label": label, "helpText": help_text, "isOptional": True,
                           "regexes": [regex]})
    return {"name": f"kappaflow-{name}".replace("_", "-"), "description": summary, "parameters": parameters}


def metadata_path(name: str) -> str:
    return os.path.join(ROOT, "templates", name, "metadata.json")


def _render(name: str) -> str:
    return json.dumps(template_metadata(name), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true")
    group.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for name in pipeline_names():
        path, text = metadata_path(name), _render(name)
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current == text:
            continue
        if args.write:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
            print(f"wrote {os.path.relpath(path, ROOT)}")
        else:
            stale.append(os.path.relpath(path, ROOT))
    if stale:
        print("out of date (run `python -m kappaflow.flex_template --write`): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
