"""The `kappaflow` command: one subcommand per pipeline, --help grouped by what an option is for,
and one-line errors before anything runs.

    kappaflow clickstream --input='events/*.jsonl' --reference_db=sqlite:///ref.db --report=run.html
    kappaflow iot_sensors --help          # every option of the pipeline, with defaults and units
    kappaflow cdc --help-beam             # Beam's own options (runners, Dataflow, workers, ...)

`python -m pipelines.<name>` and the `kappaflow-<name>` scripts run the same code.

Exit status: 0 the run finished and its accounting adds up; 1 the run failed (a server down, the
job raised, the accounting does not add up, or more dead letters than --max_invalid_ratio);
2 the command line or the configuration is wrong, and nothing ran.

Why argparse on PipelineOptions and not click or typer: Beam parses the same argv with argparse
(PipelineOptions), Dataflow flex templates hand `--name=value` to that same parser, and the
template metadata is generated from those argparse actions (kappaflow/flex_template.py). Another
library would declare every option a second time, and the two could disagree about what a flag
means; here the help, the checks and Beam's parser read one declaration.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import re
import sys
from typing import Any, Callable, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, _BeamArgumentParser

from kappaflow.core import metrics
from kappaflow.errors import ConfigurationError
from kappaflow.options import HELP_GROUPS, KafkaOptions, KappaflowOptions, Option, declared_options, default_of, option_rules

__all__ = ["main", "run_main", "run_pipeline_command", "option_groups", "pipeline_parser"]

PROG = "kappaflow"

# Beam's options that belong in a pipeline's own --help (Beam parses them; --help-beam lists the rest).
_BEAM_SHOWN: dict[str, dict[str, Any]] = {
    "runner": dict(default="DirectRunner", help="Where the job runs: DirectRunner (local), PrismRunner, "
                                                "FlinkRunner, DataflowRunner."),
    "streaming": dict(action="store_true", help="Run as a streaming job: a Pub/Sub subscription, or the input "
                                                "files replayed in event time."),
    "dry_run": dict(default="False", choices=("True", "False", "true", "false"),
                    help="True: check the options and build the job graph (with DataflowRunner: the job it "
                         "would submit, without Google credentials); run nothing."),
}
_DATAFLOW = ("DataflowRunner", "dataflow")


class _RaisingParser(_BeamArgumentParser):
    """argparse that raises instead of printing usage and exiting: the command prints one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigurationError(message)


def _pipeline_module(name: str):
    return importlib.import_module(f"pipelines.{name}")


def _module_of(cls: type) -> Any:
    """The module that defines a pipeline's options: under `python -m pipelines.cdc`, `__main__`
    (whose docstring the help shows), not a second import of `pipelines.cdc`."""
    return sys.modules[cls.__module__]


def _help_text(cls: type[KappaflowOptions], option: Option) -> str:
    text = option.help.replace("%", "%%")
    if "default:" in text.lower():
        return text
    default = default_of(cls, option)
    unit = "s" if option.name.endswith("_seconds") else option.unit
    if default is None:
        return text  # off unless given
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    return f"{text} [default: {shown}{' ' + unit if unit else ''}]"


def _metavar(option: Option) -> Optional[str]:
    if option.choices:
        return None  # argparse shows the choices
    if option.name.endswith("_seconds"):
        return "SECONDS"
    if option.type in (int, float):
        return "N"
    return option.metavar or "VALUE"


def _shown_options(cls: type[KappaflowOptions]) -> tuple[Option, ...]:
    """A pipeline's options in its --help: its own, and Kafka's (every pipeline reads Kafka; they are
    kept out of the options class because Dataflow templates cannot run that read)."""
    return (*declared_options(cls), *declared_options(KafkaOptions))


def option_groups() -> dict[str, str]:
    """option dest → its --help group, for every option of every pipeline and the Beam ones shown."""
    from kappaflow.flex_template import options_class, pipeline_names

    ours = {option.name: option.group for name in pipeline_names() for option in _shown_options(options_class(name))}
    return {**ours, **{dest: "runner" for dest in (*_BEAM_SHOWN, "debug")}}


def pipeline_parser(name: str, cls: Optional[type[KappaflowOptions]] = None) -> argparse.ArgumentParser:
    """The parser behind `kappaflow NAME --help` and the value checks: the pipeline's own options
    (one declaration: their OPTIONS tables, kappaflow/options.py) plus the few Beam options a user
    sets per run."""
    from kappaflow.flex_template import options_class

    cls = cls or options_class(name)
    module = _module_of(cls)
    # The module's summary and data flow; its `python -m` examples would repeat the usage line.
    paragraphs = [p for p in (module.__doc__ or "").strip().split("\n\n") if "python -m" not in p]
    parser = _RaisingParser(prog=f"{PROG} {name}", usage=f"{PROG} {name} --input=FILES [options]",
                            add_help=False, allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            description="\n\n".join(paragraphs),
                            epilog=f"Beam's own options: {PROG} {name} --help-beam. Exit status: 0 done, "
                                   "1 the run failed, 2 the command line is wrong.")
    groups = {title: parser.add_argument_group(f"{title} options") for title in HELP_GROUPS}
    for option in _shown_options(cls):
        groups[option.group].add_argument(option.flag, dest=option.name, help=_help_text(cls, option),
                                          default=default_of(cls, option), type=option.type,
                                          choices=option.choices, metavar=_metavar(option))
    for title, group in groups.items():
        if not group._group_actions:  # e.g. CDC has no windows: say so rather than hide the group
            group.description = f"none: {name} has no {title} options"
    for dest, spec in _BEAM_SHOWN.items():
        groups["runner"].add_argument(f"--{dest}", dest=dest, **spec)
    groups["runner"].add_argument("--debug", action="store_true",
                                  help="Show Python tracebacks and Beam's INFO log (default: one-line errors).")
    groups["runner"].add_argument("-h", "--help", action="store_true", help="Show this help.")
    groups["runner"].add_argument("--help-beam", action="store_true", help="Show Beam's own options.")
    return parser


def _every_option_parser(beam_only: bool = False) -> _RaisingParser:
    """Beam's view of the command line: every registered PipelineOptions class, as Beam parses it."""
    from kappaflow import flink  # noqa: F401 - registers Flink's CheckpointOptions (--checkpointing_interval ...)

    parser = _RaisingParser(prog=PROG, add_help=False, allow_abbrev=False)
    classes: dict[str, type[PipelineOptions]] = {}
    for cls in PipelineOptions.__subclasses__():  # what Beam registers (PipelineOptions.get_all_options)
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        if not beam_only or cls.__module__.startswith("apache_beam"):
            cls._add_argparse_args(parser)
    return parser


def _unknown_option_message(name: str, arg: str, known: Sequence[str]) -> str:
    if not arg.startswith("-"):
        return f"unexpected argument {arg!r}: options take the form --name=value ({PROG} {name} --help)"
    flag = arg.split("=", 1)[0]
    close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"{PROG} {name} --help lists the options"
    return f"unknown option {flag}; {hint}"


def _example(parser: argparse.ArgumentParser, flag: str) -> str:
    for action in parser._actions:
        if flag in action.option_strings and action.default not in (None, False):
            value = f"{action.default:g}" if isinstance(action.default, float) else action.default
            return f"; e.g. {flag}={value}"
    return ""


def parse_command_line(name: str, cls: type[KappaflowOptions], argv: Sequence[str]) -> tuple[list[str], Any]:
    """argv → (argv for Beam, our parsed values); ConfigurationError for what cannot run."""
    from kappaflow.checks import check_own_options
    from kappaflow.launcher import normalize_boolean_flags

    argv = normalize_boolean_flags(argv)
    check_own_options(name, cls, argv)  # before Beam's parser: another pipeline's flag is no typo
    everything = _every_option_parser()
    ours = pipeline_parser(name, cls)
    known = sorted({s for p in (everything, ours) for a in p._actions for s in a.option_strings
                    if s.startswith("--")})
    try:
        _, unknown = everything.parse_known_args(argv)
        unknown = [a for a in unknown if a not in ("--debug", "--help-beam")]
        if unknown:
            raise ConfigurationError(_unknown_option_message(name, unknown[0], known))
        values, _ = ours.parse_known_args(argv)
    except ConfigurationError as err:
        flag = re.match(r"argument (--\w+)", str(err))
        raise ConfigurationError(f"{err}{_example(ours, flag.group(1)) if flag else ''}") from None
    for dest, rule in option_rules(cls).items():  # value checks beyond the type (kappaflow/options.py)
        value = getattr(values, dest, None)
        if value is not None and not rule.accepts(value):
            raise ConfigurationError(f"--{dest}={value:g}: {rule.text}{_example(ours, f'--{dest}')}")
    if not values.input and not getattr(values, "input_subscription", None):
        raise ConfigurationError("--input is required: files (e.g. --input='events/*.jsonl'), or "
                                 "bigquery:PROJECT.DATASET.TABLE; or --input_subscription with --streaming")
    folder = os.path.dirname(os.path.abspath(values.report)) if values.report else None
    if folder and not os.path.isdir(folder):
        raise ConfigurationError(f"--report={values.report}: the folder {folder} does not exist; create it "
                                 "or write the report elsewhere")
    # Beam's --dry_run is a string, so "False" would be true: pass it only when it is meant.
    argv = [a for a in argv if not re.fullmatch(r"--dry_run=(False|false)", a) and a not in ("--debug",)]
    return argv, values


def _dry_run(name: str, build: Callable, options: PipelineOptions, own: KappaflowOptions) -> int:
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    try:
        if runner in _DATAFLOW:
            # Beam's DataflowRunner stops before submitting (TestOptions.dry_run) and needs no credentials.
            pipeline = beam.Pipeline(options=options)
            build(pipeline, own)
            graph = pipeline.run().job.proto_pipeline
        else:
            pipeline = beam.Pipeline(runner="DirectRunner", options=options)
            build(pipeline, own)
            graph = pipeline.to_runner_api()
    except ValueError as err:  # the graph or the runner refused an option
        raise ConfigurationError(str(err).strip().splitlines()[0]) from err
    print(f"{PROG} {name}: dry run on {runner}: the options are valid and the job graph has "
          f"{len(graph.components.transforms)} transforms; nothing was run", flush=True)
    return 0


def _check_ratio(name: str, accounting: Any, limit: Optional[float]) -> Optional[str]:
    if limit is None or not accounting.read:
        return None
    dead = sum(getattr(accounting, name, 0) for name, outcome in metrics.OUTCOMES.items()
               if outcome.ends_in == "dead")
    ratio = dead / accounting.read
    if ratio <= limit:
        return None
    return (f"{PROG} {name}: {dead:,} of {accounting.read:,} records read ({ratio:.1%}) went to the dead "
            f"letters, more than --max_invalid_ratio={limit:g}")


def _check_servers_and_reference(name: str, cls: type[KappaflowOptions], own: KappaflowOptions) -> None:
    """A reference server that does not answer or lacks a table is a configuration error (exit 2);
    another server that is down stops the run with exit 1 (launcher.run would too, later)."""
    from kappaflow.preflight import EndpointUnavailable, check_endpoints
    from kappaflow.checks import check_reference_db

    lookups = getattr(_module_of(cls), "reference_lookups", None)
    url = getattr(own, "reference_db", None)  # EnrichmentOptions
    reference = lookups(own) if lookups is not None and url else None
    embedded = bool(url) and url.startswith("sqlite")
    if reference and not embedded:
        check_reference_db(url, reference)
    try:
        check_endpoints(own)
    except EndpointUnavailable as err:
        raise SystemExit(f"{name}: {err}") from None  # one line, exit status 1
    if reference and embedded:
        check_reference_db(url, reference)


def run_pipeline_command(name: str, build: Callable, cls: type[KappaflowOptions],
                         argv: Optional[Sequence[str]] = None) -> int:
    """The whole command for one pipeline; returns the exit status."""
    from kappaflow import launcher
    from kappaflow.checks import check_input
    from kappaflow.runner_support import check_runner_support

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING)
    try:
        if "-h" in argv or "--help" in argv:
            pipeline_parser(name, cls).print_help()
            return 0
        if "--help-beam" in argv:
            beam_parser = _every_option_parser(beam_only=True)
            beam_parser.prog = f"{PROG} {name}"
            beam_parser.description = "Apache Beam's own options (the pipeline's are in --help)."
            beam_parser.print_help()
            return 0
        beam_argv, values = parse_command_line(name, cls, argv)
        options = PipelineOptions(beam_argv)
        own = options.view_as(cls)
        check_input(own.input)
        # Before the servers: an unsupported runner is a wrong command line, whatever answers.
        check_runner_support(options, own)
        if values.dry_run.lower() == "true":
            return _dry_run(name, build, options, own)
        _check_servers_and_reference(name, cls, own)
        accounting = launcher.run(name, build, beam_argv, options_class=cls)
    except ConfigurationError as err:
        if debug:
            raise
        print(f"{PROG} {name}: error: {err}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {name}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as err:  # the job failed: one line, the traceback with --debug
        if debug:
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        print(f"{PROG} {name}: the run failed: {type(err).__name__}: {first} (--debug shows the traceback)",
              file=sys.stderr, flush=True)
        return 1
    if not accounting.balanced:
        print(f"{PROG} {name}: the accounting does not add up (see the summary above)", file=sys.stderr)
        return 1
    too_many = _check_ratio(name, accounting, values.max_invalid_ratio)
    if too_many:
        print(too_many, file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`kappaflow PIPELINE [options]`."""
    from kappaflow.flex_template import options_class, pipeline_names

    argv = list(sys.argv[1:] if argv is None else argv)
    names = pipeline_names()
    aliases = {n.replace("_", "-"): n for n in names}
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {PROG} PIPELINE [options]   ({PROG} PIPELINE --help for its options)\n\npipelines:")
        for pipeline in names:
            summary = (_pipeline_module(pipeline).__doc__ or "").strip().splitlines()[0]
            print(f"  {pipeline:<14}{summary}")
        return 0 if argv else 2
    name = aliases.get(argv[0], argv[0])
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]}?" if close else f"one of {', '.join(names)}"
        print(f"{PROG}: error: unknown pipeline {argv[0]!r}; {hint}", file=sys.stderr)
        return 2
    module = _pipeline_module(name)
    return run_pipeline_command(name, module.build, options_class(name), argv[1:])


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()


def run_main(pipeline_name: str, build: Callable, options_class: type[KappaflowOptions]) -> None:
    """Entry point of `python -m pipelines.<name>`: the `kappaflow <name>` command: checks first,
    one-line errors, exit non-zero when the accounting does not add up."""
    sys.exit(run_pipeline_command(pipeline_name, build, options_class))
