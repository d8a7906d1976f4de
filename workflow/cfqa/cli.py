"""The `cfqa` command line: one subcommand per pipeline stage, every path explicit.

Snakemake rules and DVC stages call exactly these commands. Each stage command validates
params.yaml, checks that its inputs exist, takes a lock on its outputs and removes what a
killed run of it left behind, then runs. Bad input (configuration, missing or malformed
files) prints one line on stderr and exits 2; any other failure exits 1 and points to the
log file holding the traceback.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cfqa import __version__
from cfqa import config as config_module
from cfqa import device
from cfqa.atomic_io import exclusive_outputs, remove_debris, write_json
from cfqa.errors import BadInput
from cfqa.logs import get_logger, setup_logging
from cfqa.redact import redact

log = get_logger("cfqa")

BAD_INPUT_EXIT = 2
FAILURE_EXIT = 1

# The errors that mean "the input is wrong" (configuration, files, their contents) or "the
# settings do not fit this machine": one line on stderr, exit 2. Every such error of the
# package derives from cfqa.errors.BadInput; of Python's own, a missing or misplaced path.
INPUT_ERRORS = (BadInput, FileNotFoundError, NotADirectoryError, IsADirectoryError)


class MissingInput(BadInput, ValueError):
    """A declared input path does not exist or is not the right kind (file or directory)."""


@dataclass(frozen=True)
class PathArg:
    """One path option. `role`: an input directory or file (must exist before any work), an
    output (locked, its debris removed), or both (evaluate writes into train's results)."""
    flag: str
    help: str
    role: Literal["dir", "file", "out", "dir+out"]
    required: bool = True

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")


@dataclass(frozen=True)
class Command:
    name: str
    summary: str                     # one line in `cfqa --help`
    description: str                 # what `cfqa NAME --help` explains
    paths: tuple[PathArg, ...]
    # The run's --method/--seed options. The commands of a run (tune, train, evaluate) are the
    # ones that run a model on `train.device` (the DAG table's GPU stages).
    run: Literal["", "method", "method+seed"] = ""
    cache: bool = False              # the stage reads (or, fetch, writes) the run's cache

    @property
    def module(self) -> str:
        return f"cfqa.stages.{self.name}"


RAW = PathArg("raw", "raw data directory (stage download)", "dir")
PREPARED = PathArg("prepared", "prepared data directory (stage prepare)", "dir")
VARIANTS = PathArg("variants", "variants directory (stage counterfactuals)", "dir")
MODELS = PathArg("models", "models directory holding the backbones (stage pretrain)", "dir")
TOKENIZED = PathArg("tokenized", "tokenized variants (stage tokenize); default: tokenize here", "dir", required=False)

COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("fetch", "download the pinned data and hub models into the run's cache (the one stage online)",
            "Downloads what later stages need from the network into the run's cache (see --cache): NQ "
            "(data.source nq, each file checked against data.nq.sha256) or its Hugging Face export, and "
            "the hub models pretrain.hub_id and pretrain.lm_adapted_hub_id at the commits hub.models pins, "
            "weights checked against their sha256 and a .bin-only checkpoint converted to safetensors. "
            "Writes a manifest of what it fetched. Every other stage runs with the hub offline.",
            (PathArg("out", "fetch manifest JSON to write", "out"),), cache=True),
    Command("download", "build the raw dataset (NQ simplified format) from the embedded world or the cache",
            "Writes the raw dataset in Natural Questions simplified format with a sha256 manifest: "
            "the embedded offline world (data.source: embedded), NQ itself (nq) or its Hugging Face "
            "copy (huggingface), the last two from what `cfqa fetch` put in the run's cache.",
            (PathArg("out", "raw data directory to write", "out"),
             PathArg("fetched", "fetch manifest (stage fetch): orders this stage after it", "file", required=False)),
            cache=True),
    Command("prepare", "keep questions with a short and a long answer; split",
            "Streams the raw NQ files, keeps questions with both a short and a long answer (context = "
            "the long answer's text) and splits NQ train into train/validation by a hash of "
            "(prepare.seed, example id); test comes from NQ dev. Writes {train,validation,test}.jsonl "
            "and stats.json.",
            (RAW, PathArg("out", "prepared data directory to write", "out"))),
    Command("entities", "type each answer with spaCy NER",
            "Labels each prepared answer with its spaCy entity type and Longpre answer-type group.",
            (PREPARED, RAW, PathArg("out", "entities directory to write", "out"))),
    Command("counterfactuals", "entity substitution; factual/counterfactual/empty/random variants",
            "Builds the factual, counterfactual (answer replaced by another of the same type), empty and "
            "random contexts of every split and of the `seen` set, and the data statistics.",
            (PREPARED, PathArg("entities", "entities directory (stage entities)", "dir"),
             PathArg("out", "variants directory to write", "out"),
             PathArg("stats", "data statistics JSON to write", "out"))),
    Command("pretrain", "tokenizer + tiny base model of pretrain.family (or a hub model) saved as safetensors",
            "pretrain.family t5: trains a sentencepiece tokenizer and pretrains a tiny T5 with span "
            "corruption, then an LM-adapted copy; gpt_neo: trains a byte-level BPE tokenizer and "
            "pretrains a tiny GPT-Neo on next-token prediction (its --out-lm directory is a copy). "
            "With pretrain.hub_id set, saves those hub models instead, loaded offline from the run's "
            "cache (`cfqa fetch`).",
            (RAW, PathArg("out", "base model directory to write", "out"),
             PathArg("out-lm", "LM-adapted base model directory to write", "out"),
             PathArg("fetched", "fetch manifest (stage fetch): orders this stage after it", "file", required=False)),
            cache=True),
    Command("tokenize", "tokenize every variant file once per backbone tokenizer, for every job",
            "Tokenizes the inputs and targets (both formats) of every variant file with each distinct "
            "tokenizer of the backbones, untruncated; train and evaluate jobs load them and truncate to "
            "their own lengths instead of tokenizing again.",
            (VARIANTS, MODELS, PathArg("out", "tokenized data directory to write", "out"))),
    Command("tune", "choose one method's learning rate on the validation set (successive halving)",
            "Tries tune.trials learning rates (the grid train.lr times tune.lr_factors, extended beyond "
            "its edge while the best rate is there), each on the real schedule of train.max_steps, "
            "compares them at tune.rungs by validation contextual EM on tune.variant (then loss) and "
            "continues the best; keeps the best at the last rung.",
            (VARIANTS, MODELS,
             PathArg("out", "learning-rate selection JSON to write (results/METHOD/lr_selection.json)", "out")),
            run="method"),
    Command("train", "fine-tune one method with one seed",
            "Fine-tunes one method of params.yaml `methods` with one seed; saves only its trainable "
            "weights, the training record and the loss curve. A killed run resumes from its last "
            "checkpoint.",
            (VARIANTS, MODELS,
             PathArg("out", "trained directory of the run to write (models/METHOD/seedSEED)", "out"),
             PathArg("results", "results directory of the run to write (results/METHOD/seedSEED)", "out"),
             PathArg("lr-selection", "train with the learning rate `cfqa tune` chose "
                                     "(results/METHOD/lr_selection.json); default: the configured train.lr",
                     "file", required=False),
             TOKENIZED),
            run="method+seed"),
    Command("evaluate", "generate and score one trained run on the test and seen sets",
            "Generates answers of one trained (method, seed) run on the test and seen sets in all four "
            "context variants, scores them and logs the run to MLflow.",
            (VARIANTS, MODELS,
             PathArg("model", "trained directory of the run (train's --out)", "dir"),
             PathArg("results", "results directory of the run (train's --results; predictions and "
                                "metrics are written there)", "dir+out"),
             TOKENIZED),
            run="method+seed"),
    Command("report", "tables, plots, HTML and Markdown report, summary metrics",
            "Aggregates every method and seed into reports/report.md, reports/index.html, figures and "
            "the summary metrics.",
            (PathArg("results", "results directory (results/)", "dir"),
             PathArg("data-stats", "data statistics JSON (stage counterfactuals)", "file"),
             PathArg("out", "reports directory to write", "out"),
             PathArg("summary", "summary metrics JSON to write", "out"),
             PathArg("headline", "per method, the seed mean and interval of the headline numbers (the DVC metric): "
                                 "JSON to write", "out", required=False))),
)}


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


def _add_stage(sub, command: Command) -> None:
    parser = sub.add_parser(command.name, help=command.summary, description=command.description,
                            formatter_class=HelpFormatter)
    _add_params_option(parser)
    for path in command.paths:
        parser.add_argument(f"--{path.flag}", type=Path, required=path.required,
                            default=None, metavar="PATH", help=path.help)
    if command.run:
        parser.add_argument("--method", required=True, help="a key of params.yaml `methods`")
    if command.run == "method+seed":
        parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of params.yaml `seeds`)")


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
    for command in COMMANDS.values():
        _add_stage(sub, command)
    validate = sub.add_parser("validate", help="check params.yaml completely; write nothing (or a stamp)",
                              description="Loads the parameter files and validates every section and every "
                                          "method's options, as each stage does before it starts. Writes "
                                          "nothing but the optional --out stamp.",
                              formatter_class=HelpFormatter)
    _add_params_option(validate)
    validate.add_argument("--out", type=Path, default=None, metavar="JSON",
                          help="on success, write this stamp (the files checked and their sha256) atomically")
    return parser


# ---------------------------------------------------------------------------- checks

def check_inputs(command: Command, args: argparse.Namespace) -> None:
    """MissingInput for the first declared input that is absent or of the wrong kind."""
    for path_arg in command.paths:
        path = getattr(args, path_arg.dest)
        if path is None or path_arg.role == "out":
            continue
        want_dir = path_arg.role in ("dir", "dir+out")
        kind = "directory" if want_dir else "file"
        if not path.exists():
            raise MissingInput(f"--{path_arg.flag} {path}: input {kind} not found ({path_arg.help}); "
                               f"run the stage that writes it first, or pass the right path")
        if path.is_dir() != want_dir:
            raise MissingInput(f"--{path_arg.flag} {path}: expected a {kind}, found a "
                               f"{'directory' if path.is_dir() else 'file'} ({path_arg.help})")


def check_device(command: Command, args: argparse.Namespace, cfg) -> None:
    """A run set to `train.device: cuda` that cannot use CUDA stops here, before it reads
    anything: CudaUnavailable naming the run (method, seed) and what it found."""
    if not command.run or args.method not in cfg.methods:
        return                                  # an unknown method is reported by the stage
    if cfg.methods[args.method].train.device == "cuda":
        seed = args.seed if command.run == "method+seed" else cfg.tune.seed
        device.require_cuda(f"method {args.method!r} seed {seed}")


def process_rank() -> int:
    """This process's rank when `accelerate launch` (torchrun) started the stage as several
    processes, one per GPU; 0 otherwise. Rank 0 alone locks and writes the outputs and the log."""
    return int(os.environ.get("RANK", "0"))


def output_paths(command: Command, args: argparse.Namespace) -> list[Path]:
    return [getattr(args, p.dest) for p in command.paths
            if p.role in ("out", "dir+out") and getattr(args, p.dest) is not None]


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
    cache and local_files_only explicitly."""
    settings = {"HF_HOME": str(cache), "HF_HUB_CACHE": str(cache / "hub"), "HF_HUB_DISABLE_TELEMETRY": "1",
                **(OFFLINE_ENV if offline else {})}
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
        command = COMMANDS[name]
        check_device(command, args, cfg)
        check_inputs(command, args)
        kwargs = {k: v for k, v in vars(args).items()
                   if k not in ("command", "params", "log_level", "log_file", "cache", "fetched")}
        cache = cache_dir(args, args.params or [config_module.DEFAULT_PARAMS])
        if command.cache:
            kwargs["cache"] = cache
        started = time.perf_counter()
        outputs = output_paths(command, args) if rank == 0 else []
        holder = f"cfqa {name} " + " ".join(f"{k}={v}" for k, v in kwargs.items())
        with exclusive_outputs(outputs, holder=holder), hub_environment(cache, offline=name != "fetch"):
            for output in outputs:
                removed = remove_debris(output)
                if removed:
                    log.info("removed what a killed run left: %s", ", ".join(map(str, removed)))
            stage = importlib.import_module(command.module)
            log.info("stage %s: %s", name, " ".join(f"{k}={v}" for k, v in kwargs.items()))
            stage.run(cfg, **kwargs)
        log.info("stage %s done in %.1f s", name, time.perf_counter() - started)
        return 0
    except KeyboardInterrupt:
        log.error("cfqa %s: interrupted", name)
        return 130
    except Exception as error:  # every failure ends here: one line on stderr, the traceback in the log
        if is_out_of_memory(error) and name in ("train", "tune", "evaluate"):
            return _fail(name, error, _memory_message(error, cfg, args), BAD_INPUT_EXIT, args.log_file)
        if isinstance(error, config_module.ConfigError):
            return _fail(name, error, config_error_line(error), BAD_INPUT_EXIT, args.log_file)
        if is_bad_input(error):
            return _fail(name, error, one_line(error), BAD_INPUT_EXIT, args.log_file)
        return _fail(name, error, one_line(error), FAILURE_EXIT, args.log_file)


if __name__ == "__main__":
    sys.exit(main())
