"""The `cfqa` command line: one subcommand per pipeline stage, every path explicit.

Snakemake rules and DVC stages call exactly these commands. Each command, its options, help
and path roles are the stage table's (cfqa.dag.table), which also builds the engines' command
lines; nothing here lists a stage. Each stage command validates params.yaml, checks that its
inputs exist, takes a lock on its outputs and removes what a killed run of it left behind,
then runs. Bad input (configuration, missing or malformed files) prints one line on stderr and
exits 2; any other failure exits 1 and points to the log file holding the traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from cfqa import __version__
from cfqa import config as config_module
from cfqa.model import device
from cfqa.io.atomic_io import exclusive_outputs, remove_debris, write_json
from cfqa.dag.table import SEED, STAGE_BY_NAME, STAGES, Stage
from cfqa.errors import BadInput
from cfqa.io.logs import get_logger, setup_logging
from cfqa.io.redact import redact

log = get_logger("cfqa")

BAD_INPUT_EXIT = 2
FAILURE_EXIT = 1

# The errors that mean "the input is wrong" (configuration, files, their contents) or "the
# settings do not fit this machine": one line on stderr, exit 2. Every such error of the
# package derives from cfqa.errors.BadInput; of Python's own, a missing or misplaced path.
INPUT_ERRORS = (BadInput, FileNotFoundError, NotADirectoryError, IsADirectoryError)


class MissingInput(BadInput, ValueError):
    """A declared input path does not exist or is not the right kind (file or directory)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (not "None" for options that have none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


def _add_params_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", action="append", default=None, metavar="YAML",
                        help=f"parameter file; repeat to override key by key "
                             f"(default: {config_module.DEFAULT_PARAMS})")


def _add_stage(sub, spec: Stage) -> None:
    """The stage's subcommand, from its table entry: `--<dim>` per dimension, then its options."""
    parser = sub.add_parser(spec.name, help=spec.summary, description=spec.description,
                            formatter_class=HelpFormatter)
    _add_params_option(parser)
    for dim in spec.dims:
        parser.add_argument(f"--{dim.name}", type=dim.type, required=True, help=dim.help)
    for option in spec.options:
        parser.add_argument(f"--{option.flag}", type=Path, required=option.required,
                            default=None, metavar=option.metavar, help=option.help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfqa", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="also write the log, with tracebacks, to this file (Snakemake's log: path)")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help=f"the run's cache of downloads (HF_HOME; NQ files; converted weights); default: "
                             f"${CACHE_ENV} if set, else the params' run_root/{CACHE_DIR}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for spec in STAGES:
        _add_stage(sub, spec)
    return parser


# ---------------------------------------------------------------------------- checks

def check_inputs(spec: Stage, args: argparse.Namespace) -> None:
    """MissingInput for the first declared input that is absent or of the wrong kind."""
    for option in spec.options:
        path = getattr(args, option.dest)
        if path is None or option.role == "out":
            continue
        want_dir = option.role in ("dir", "dir+out")
        kind = "directory" if want_dir else "file"
        if not path.exists():
            raise MissingInput(f"--{option.flag} {path}: input {kind} not found ({option.help}); "
                               f"run the stage that writes it first, or pass the right path")
        if path.is_dir() != want_dir:
            raise MissingInput(f"--{option.flag} {path}: expected a {kind}, found a "
                               f"{'directory' if path.is_dir() else 'file'} ({option.help})")


def check_device(spec: Stage, args: argparse.Namespace, cfg) -> None:
    """A run set to `train.device: cuda` that cannot use CUDA stops here, before it reads
    anything: CudaUnavailable naming the run (method, seed) and what it found."""
    if not spec.runs_model or args.method not in cfg.methods:
        return                                  # an unknown method is reported by the stage
    if cfg.methods[args.method].train.device == "cuda":
        seed = args.seed if SEED in spec.dims else cfg.tune.seed
        device.require_cuda(f"method {args.method!r} seed {seed}")


def process_rank() -> int:
    """This process's rank when `accelerate launch` (torchrun) started the stage as several
    processes, one per GPU; 0 otherwise. Rank 0 alone locks and writes the outputs and the log."""
    return int(os.environ.get("RANK", "0"))


def output_paths(spec: Stage, args: argparse.Namespace) -> list[Path]:
    return [getattr(args, o.dest) for o in spec.options
            if o.role in ("out", "dir+out") and getattr(args, o.dest) is not None]


def stage_arguments(spec: Stage, args: argparse.Namespace) -> dict:
    """What the stage's `run` gets besides the configuration: its dimensions and the paths it
    reads or writes (not those that only order it after another stage)."""
    return {**{dim.name: getattr(args, dim.name) for dim in spec.dims},
            **{o.dest: getattr(args, o.dest) for o in spec.options if o.passed}}


def _qualified_names(error: BaseException) -> set[str]:
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(error).__mro__}


def is_out_of_memory(error: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA) or a CPU allocation failure, recognized without torch."""
    if "OutOfMemoryError" in {cls.__name__ for cls in type(error).__mro__}:
        return True
    text = str(error)
    return isinstance(error, (RuntimeError, MemoryError)) and (
        "out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate" in text)


def is_bad_input(error: BaseException) -> bool:
    return isinstance(error, INPUT_ERRORS)


def one_line(error: BaseException) -> str:
    """The error's message on one line: "heading:\n  a\n  b" becomes "heading: a; b"."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} {'; '.join(lines[1:])}"


def config_error_line(error: BaseException) -> str:
    """The one line a bad parameter file or value gets, from every stage and from the Snakefile."""
    fix = "fix these keys in that file; " if str(error).startswith("invalid parameters") else ""
    return f"{one_line(error)} ({fix}`cfqa validate --params FILE` checks a configuration alone)"


def _memory_message(error: BaseException, cfg, args: argparse.Namespace) -> str:
    """Which run ran out of memory, and the knobs that change it (set per method or shared)."""
    method = getattr(args, "method", None)
    seed = getattr(args, "seed", None)
    run = f"method {method!r}" + (f" seed {seed}" if seed is not None else "")
    if args.command == "evaluate" and cfg is not None:
        return (f"{run}: out of memory ({one_line(error)}); lower evaluate.batch_size (now "
                f"{cfg.evaluate.batch_size}) or evaluate.num_beams (now {cfg.evaluate.num_beams})")
    if "cfqa.training.loop.TrainingOutOfMemory" in _qualified_names(error):   # names the knobs already
        return f"{run}: {one_line(error).replace('methods.<method>.', f'methods.{method}.')}"
    tcfg = cfg.methods[method].train if cfg is not None and method in cfg.methods else None
    knobs = tcfg.memory_knobs(method) if tcfg is not None else config_module.memory_advice(method)
    return f"{run}: out of memory ({one_line(error)}); {knobs}"


# ---------------------------------------------------------------------------- the cache

CACHE_ENV = "CFQA_CACHE"
CACHE_DIR = "cache"
# Set for every stage but fetch: nothing after fetch may reach the hub (a silent download
# would fetch an unpinned revision), and no library writes its cache outside the run's.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def cache_dir(args: argparse.Namespace, params: list) -> Path:
    """--cache, else $CFQA_CACHE (a machine's shared location), else <run_root>/cache."""
    if args.cache is not None:
        return args.cache
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(config_module.run_root(config_module.read_params(params))) / CACHE_DIR


@contextlib.contextmanager
def hub_environment(cache: Path, offline: bool):
    """HF_HOME (and the hub cache under it) in the run's cache, the hub offline unless
    `offline` is False; the process's environment is restored afterwards. Set before
    huggingface_hub is imported, which reads these variables once; the stages also pass the
    cache and local_files_only explicitly. The hub's and transformers' own bars (downloads,
    "Loading weights") follow ours: silent under CI=true and in a job's log file."""
    from cfqa.io.progress import progress_enabled

    settings = {"HF_HOME": str(cache), "HF_HUB_CACHE": str(cache / "hub"), "HF_HUB_DISABLE_TELEMETRY": "1",
                **(OFFLINE_ENV if offline else {}),
                **({} if progress_enabled() else {"HF_HUB_DISABLE_PROGRESS_BARS": "1"})}
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------- running

def _fail(command: str, error: BaseException, message: str, code: int, log_file: Path | None) -> int:
    """One line on stderr; the traceback only in the log file (a temporary one if none was given)."""
    if code == BAD_INPUT_EXIT:
        log.error("cfqa %s: %s", command, message, exc_info=error)
        return code
    if log_file is None:
        handle, name = tempfile.mkstemp(prefix=f"cfqa-{command}-", suffix=".log")
        with open(handle, "w", encoding="utf-8") as stream:
            stream.write(redact("".join(traceback.format_exception(error))))
        log_file = Path(name)
    log.error("cfqa %s failed: %s: %s (traceback in %s)", command, type(error).__name__, message, log_file,
              exc_info=error)
    return code


def run_validate(args: argparse.Namespace, cfg) -> int:
    paths = [Path(p) for p in (args.params or [config_module.DEFAULT_PARAMS])]
    log.info("valid: %s (%d sections, methods %s, seeds %s)", " + ".join(map(str, paths)),
             len(dataclasses.fields(cfg)), ", ".join(cfg.methods), list(cfg.seeds))
    if args.out is not None:
        # The stamp's bytes must not depend on the params' content: every DVC stage depends on
        # it, so a stamp that changed with each edit would rerun the whole DAG.
        write_json(args.out, {"valid": True})
        log.info("wrote %s", args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = process_rank()
    if rank:
        # Another process of a data-parallel run: rank 0 writes the log file; this one reports
        # warnings and errors on stderr only.
        args.log_file, args.log_level = None, "WARNING"
    setup_logging(args.log_level, args.log_file)
    name = args.command
    cfg = None
    try:
        cfg = config_module.load(args.params or [config_module.DEFAULT_PARAMS])
        if name == "validate":
            return run_validate(args, cfg)
        spec = STAGE_BY_NAME[name]
        check_device(spec, args, cfg)
        check_inputs(spec, args)
        kwargs = stage_arguments(spec, args)
        params_files = args.params or [config_module.DEFAULT_PARAMS]
        cache = cache_dir(args, params_files)
        if spec.cache:
            kwargs["cache"] = cache
        # The hub stays offline for every stage the table does not declare online (fetch).
        offline = not spec.needs.network(config_module.read_params(params_files))
        started = time.perf_counter()
        outputs = output_paths(spec, args) if rank == 0 else []
        holder = f"cfqa {name} " + " ".join(f"{k}={v}" for k, v in kwargs.items())
        with exclusive_outputs(outputs, holder=holder), hub_environment(cache, offline=offline):
            for output in outputs:
                removed = remove_debris(output)
                if removed:
                    log.info("removed what a killed run left: %s", ", ".join(map(str, removed)))
            stage = importlib.import_module(spec.module)
            log.info("stage %s: %s", name, " ".join(f"{k}={v}" for k, v in kwargs.items()))
            stage.run(cfg, **kwargs)
        log.info("stage %s done in %.1f s", name, time.perf_counter() - started)
        return 0
    except KeyboardInterrupt:
        log.error("cfqa %s: interrupted", name)
        return 130
    except Exception as error:  # every failure ends here: one line on stderr, the traceback in the log
        if is_out_of_memory(error) and name in STAGE_BY_NAME and STAGE_BY_NAME[name].runs_model:
            return _fail(name, error, _memory_message(error, cfg, args), BAD_INPUT_EXIT, args.log_file)
        if isinstance(error, config_module.ConfigError):
            return _fail(name, error, config_error_line(error), BAD_INPUT_EXIT, args.log_file)
        if is_bad_input(error):
            return _fail(name, error, one_line(error), BAD_INPUT_EXIT, args.log_file)
        return _fail(name, error, one_line(error), FAILURE_EXIT, args.log_file)


if __name__ == "__main__":
    sys.exit(main())
