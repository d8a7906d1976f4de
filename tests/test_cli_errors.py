"""The CLI on bad input: one line on stderr naming what is wrong and where, exit 2, the
traceback only in the log file; unexpected failures exit 1 and point to the log; --version,
--help with descriptions and defaults, `cfqa validate`, the output lock, out-of-memory."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from cfqa import __version__, cli
from cfqa import config as config_module
from cfqa.io.atomic_io import exclusive_outputs, lock_path
from cfqa.config import PROJECT_ROOT
from cfqa.dag import STAGES
from cfqa.dag import stage as dag_stage
from bad_params import CASES
from pipeline_support import tool_env

PARAMS = PROJECT_ROOT / "params.yaml"


def stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def error_lines(capsys) -> list[str]:
    """stderr's error lines, once a stage has started (its INFO lines go there too)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if " ERROR " in line]


@pytest.fixture
def no_stage(monkeypatch):
    """Records stage imports instead of running a stage; `stage.run` can be set per test."""
    imported: list[str] = []
    stage = types.SimpleNamespace(run=lambda cfg, **kwargs: None)

    def import_module(name):
        imported.append(name)
        return stage

    monkeypatch.setattr(cli.importlib, "import_module", import_module)
    return types.SimpleNamespace(imported=imported, stage=stage)


def override(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "override.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- version, help

def test_version_from_the_installed_command():
    result = subprocess.run(["cfqa", "--version"], env=tool_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"cfqa {__version__}"


@pytest.mark.parametrize("command", [spec.name for spec in STAGES])
def test_every_stage_help_says_what_it_does_and_shows_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert " ".join(dag_stage(command).description.split()) in text
    assert "(default: params.yaml)" in text
    assert "(default: None)" not in text


def test_top_level_help_shows_the_log_level_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "(default: INFO)" in " ".join(capsys.readouterr().out.split())


# ---------------------------------------------------------------------------- missing inputs

def test_missing_input_is_one_line_naming_the_path_before_any_work(tmp_path, capsys, no_stage):
    log = tmp_path / "prepare.log"
    missing = tmp_path / "data" / "raw"
    code = cli.main(["--log-file", str(log), "prepare", "--params", str(PARAMS), "--raw", str(missing),
                     "--out", str(tmp_path / "data" / "prepared")])
    lines = stderr_lines(capsys)
    assert code == 2 and no_stage.imported == []
    assert len(lines) == 1, lines
    assert f"--raw {missing}: input directory not found" in lines[0] and "Traceback" not in lines[0]
    assert "Traceback" in log.read_text(encoding="utf-8")        # the traceback is in the log only
    assert not (tmp_path / "data").exists()


def test_input_of_the_wrong_kind_is_one_line(tmp_path, capsys, no_stage):
    (tmp_path / "results").mkdir()
    stats_dir = tmp_path / "stats.json"
    stats_dir.mkdir()
    code = cli.main(["report", "--params", str(PARAMS), "--results", str(tmp_path / "results"),
                     "--data-stats", str(stats_dir), "--out", str(tmp_path / "reports"),
                     "--summary", str(tmp_path / "summary.json")])
    lines = stderr_lines(capsys)
    assert code == 2 and len(lines) == 1 and no_stage.imported == []
    assert f"--data-stats {stats_dir}: expected a file, found a directory" in lines[0]


def test_evaluate_without_train_json_fails_in_one_line(tmp_path, capsys):
    """The real evaluate stage: a missing train.json stops it before any generation."""
    for name in ("variants", "models/base", "models/full/seed0", "results/full/seed0"):
        (tmp_path / name).mkdir(parents=True)
    code = cli.main(["evaluate", "--params", str(PARAMS), "--method", "full", "--seed", "0",
                     "--variants", str(tmp_path / "variants"), "--models", str(tmp_path / "models"),
                     "--model", str(tmp_path / "models/full/seed0"),
                     "--results", str(tmp_path / "results/full/seed0")])
    lines = error_lines(capsys)
    assert code == 2 and len(lines) == 1, lines
    assert f"{tmp_path}/results/full/seed0/train.json: missing; `cfqa train --method full" in lines[0]


def test_malformed_input_file_names_file_and_line(tmp_path, capsys):
    for name in ("prepared", "entities"):
        (tmp_path / name).mkdir()
        for split in ("train", "validation", "test"):
            (tmp_path / name / f"{split}.jsonl").write_text('{"id": 1}\n', encoding="utf-8")
    (tmp_path / "entities" / "train.jsonl").write_text('{"id": 1}\n{"id": \n', encoding="utf-8")
    code = cli.main(["counterfactuals", "--params", str(PARAMS), "--prepared", str(tmp_path / "prepared"),
                     "--entities", str(tmp_path / "entities"), "--out", str(tmp_path / "variants"),
                     "--stats", str(tmp_path / "stats.json")])
    lines = error_lines(capsys)
    assert code == 2 and len(lines) == 1, lines
    assert f"{tmp_path}/entities/train.jsonl:2: expected one JSON object per line" in lines[0]


# ---------------------------------------------------------------------------- parameters

def test_malformed_params_file_is_one_line_naming_the_file(tmp_path, capsys, no_stage):
    bad = override(tmp_path, "train: [1, 2\n")
    code = cli.main(["validate", "--params", str(PARAMS), "--params", str(bad)])
    lines = stderr_lines(capsys)
    assert code == 2 and len(lines) == 1, lines
    assert f"{bad}: not valid YAML" in lines[0]


# Every value found accepted (or feared accepted) by trying faults on a finished run.
BAD_PARAMS = [
    ("prepare: {validation_fraction: .nan}", "prepare.validation_fraction: expected a finite number > 0 and < 1, got nan"),
    ("methods: {prompt: {options: {num_virtual_tokens: 0}}}",
     "methods.prompt.options.num_virtual_tokens: method 'prompt': expected an integer >= 1, got 0"),
    ("methods: {adapter: {options: {reduction_factor: true}}}",
     "methods.adapter.options.reduction_factor: method 'adapter': expected an integer >= 1, got True"),
    ("train: {batch_size: 16.0}", "train.batch_size: expected an integer >= 1, got 16.0"),
    ("train: {lr: .nan}", "train.lr: expected a finite number > 0, got nan"),
    ("train: {lr: .inf}", "train.lr: expected a finite number > 0, got inf"),
    ("methods: {lora: {train: {lr: -.inf}}}", "methods.lora.train.lr"),
    ("pretrain: {lr: .nan}", "pretrain.lr: expected a finite number > 0, got nan"),
    ("train: {lr: 0}", "train.lr: 0 is less than or equal to the minimum of 0"),
    ("methods: {'full;echo hi': {method: full}}", "methods: expected a method key: a lower-case letter"),
    ("methods: {'full $(touch pwned)': {method: full}}", "got 'full $(touch pwned)'"),
]


@pytest.mark.parametrize("text, expected", BAD_PARAMS, ids=[text for text, _ in BAD_PARAMS])
def test_bad_param_is_one_line_naming_file_and_key(tmp_path, capsys, no_stage, text, expected):
    bad = override(tmp_path, text + "\n")
    log = tmp_path / "train.log"
    code = cli.main(["--log-file", str(log), "train", "--params", str(PARAMS), "--params", str(bad),
                     "--method", "full", "--seed", "0", "--variants", str(tmp_path),
                     "--models", str(tmp_path), "--out", str(tmp_path / "m"), "--results", str(tmp_path / "r")])
    lines = stderr_lines(capsys)
    assert code == 2 and no_stage.imported == []
    assert len(lines) == 1, lines
    assert f"{bad}: " in lines[0] and expected in lines[0]
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists() and not Path("pwned").exists()


# The table of bad settings: the values above, then every case of tests/bad_params.py.
BAD_SETTINGS = [(text.encode(), expected) for text, expected in BAD_PARAMS] + [(case.text, case.expected) for case in CASES]


@pytest.mark.parametrize("text, expected", BAD_SETTINGS,
                         ids=[text for text, _ in BAD_PARAMS] + [case.id for case in CASES])
def test_every_bad_setting_is_rejected_by_validate_in_one_line(tmp_path, capsys, text, expected):
    """`cfqa validate`: exit 2, one line naming the file (and the key, or the line of a file no
    YAML reader should read) and the expectation; nothing else printed, and no line of the
    size an expanded alias bomb used to print (522 MB)."""
    bad = tmp_path / "override.yaml"
    bad.write_bytes(text)
    code = cli.main(["validate", "--params", str(PARAMS), "--params", str(bad), "--out", str(tmp_path / "stamp")])
    lines = stderr_lines(capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "ERROR cfqa: cfqa validate: " in lines[0] and f"{bad}: " in lines[0]
    assert expected in lines[0], lines[0]
    assert len(lines[0]) < 2000 and not (tmp_path / "stamp").exists()


def test_the_limits_leave_real_parameter_files_alone(tmp_path, capsys):
    """The largest seed, a 64-character method key, aliases a person writes: all valid."""
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"seeds: [0, {2 ** 32 - 1}]\n"
                  f"methods:\n  lora: &lora {{method: lora, train: {{lr: 0.005}}, options: {{r: 8, alpha: 16, dropout: 0.0, "
                  f"target_modules: [q, v]}}}}\n  {'l' * 64}: *lora\n", encoding="utf-8")
    assert cli.main(["validate", "--params", str(PARAMS), "--params", str(ok)]) == 0, capsys.readouterr().err


def test_several_bad_params_are_listed_on_one_line(tmp_path, capsys):
    bad = override(tmp_path, "train: {batch_size: 16.0, lr: .nan}\n")
    assert cli.main(["validate", "--params", str(PARAMS), "--params", str(bad)]) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and "train.batch_size" in lines[0] and "train.lr" in lines[0]


def test_validate_writes_only_its_stamp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["validate", "--params", str(PARAMS)]) == 0
    assert list(tmp_path.iterdir()) == []
    stamp = tmp_path / "logs" / "params.valid.json"
    assert cli.main(["validate", "--params", str(PARAMS), "--out", str(stamp)]) == 0
    assert [p.name for p in stamp.parent.iterdir()] == ["params.valid.json"]
    # The same bytes whatever the params say: every DVC stage depends on the stamp.
    assert json.loads(stamp.read_text()) == {"valid": True}

    stamp.unlink()
    bad = override(tmp_path, "train: {batch_size: 16.0}\n")
    assert cli.main(["validate", "--params", str(PARAMS), "--params", str(bad), "--out", str(stamp)]) == 2
    assert not stamp.exists()


# ---------------------------------------------------------------------------- failures

def test_unexpected_error_points_to_the_log_holding_the_traceback(tmp_path, capsys, no_stage):
    def broken(cfg, **kwargs):
        raise KeyError("a bug")

    no_stage.stage.run = broken
    log = tmp_path / "download.log"
    code = cli.main(["--log-file", str(log), "download", "--params", str(PARAMS), "--out", str(tmp_path / "raw")])
    lines = error_lines(capsys)
    assert code == 1 and len(lines) == 1, lines
    assert f"cfqa download failed: KeyError: 'a bug' (traceback in {log})" in lines[0]
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and 'raise KeyError("a bug")' in text


def test_without_a_log_file_the_traceback_goes_to_a_temporary_log(tmp_path, capsys, no_stage):
    def broken(cfg, **kwargs):
        raise ZeroDivisionError("another bug")

    no_stage.stage.run = broken
    assert cli.main(["download", "--params", str(PARAMS), "--out", str(tmp_path / "raw")]) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1
    written = Path(lines[0].rsplit("(traceback in ", 1)[1].rstrip(")"))
    try:
        assert "ZeroDivisionError: another bug" in written.read_text(encoding="utf-8")
    finally:
        written.unlink()


def test_a_second_run_on_the_same_outputs_fails_naming_the_lock(tmp_path, capsys, no_stage):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    prepared = tmp_path / "data" / "prepared"
    with exclusive_outputs([prepared], holder="cfqa prepare (the first run)"):
        code = cli.main(["prepare", "--params", str(PARAMS), "--raw", str(raw), "--out", str(prepared)])
        lines = stderr_lines(capsys)
        assert code == 2 and no_stage.imported == [] and len(lines) == 1, lines
        assert f"{lock_path(prepared)}: another run (pid " in lines[0]
        assert "cfqa prepare (the first run)) is writing" in lines[0]
    assert cli.main(["prepare", "--params", str(PARAMS), "--raw", str(raw), "--out", str(prepared)]) == 0
    assert not lock_path(prepared).exists()


def test_the_lock_holds_across_processes(tmp_path):
    out = tmp_path / "models" / "full" / "seed0"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cfqa.io.atomic_io import exclusive_outputs\n"
                               f"with exclusive_outputs([{str(out)!r}], holder='train full 0'):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=tool_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        (tmp_path / "variants").mkdir()
        result = subprocess.run(["cfqa", "train", "--params", str(PARAMS), "--method", "full", "--seed", "0",
                                 "--variants", str(tmp_path / "variants"), "--models", str(tmp_path / "models"),
                                 "--out", str(out), "--results", str(tmp_path / "results")],
                                env=tool_env(), capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"{lock_path(out)}: another run (pid {holder.pid}" in lines[0]


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 68719476736 bytes"),
])
def test_out_of_memory_names_the_method_and_the_knobs(tmp_path, capsys, no_stage, error):
    def out_of_memory(cfg, **kwargs):
        raise error

    no_stage.stage.run = out_of_memory
    (tmp_path / "variants").mkdir()
    (tmp_path / "models").mkdir()
    code = cli.main(["train", "--params", str(PARAMS), "--method", "lora", "--seed", "1",
                     "--variants", str(tmp_path / "variants"), "--models", str(tmp_path / "models"),
                     "--out", str(tmp_path / "m"), "--results", str(tmp_path / "r")])
    lines = error_lines(capsys)
    assert code == 2 and len(lines) == 1, lines
    for text in ("method 'lora' seed 1: out of memory", "train.batch_size is", "train.grad_accum_steps",
                 "train.gradient_checkpointing false", "methods.lora.train"):
        assert text in lines[0], lines[0]


def cuda_out_of_memory():
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")


def cpu_out_of_memory():
    torch.empty(10 ** 13)          # 40 TB: the CPU allocator's own error


@pytest.mark.parametrize("fail", [cuda_out_of_memory, cpu_out_of_memory])
def test_the_training_loop_turns_out_of_memory_into_one_clear_error(tmp_path, fail):
    """On the real loop: a step that does not fit names the step and the knobs, not a stack."""
    from cfqa.config import registry_options
    from cfqa.methods.registry import get_method
    from cfqa.training.loop import TrainingOutOfMemory, fine_tune, make_accelerator
    from conftest import tiny_t5

    model = get_method("full").build(tiny_t5(0), registry_options("full"))
    calls = [0]
    forward = model.forward

    def forward_until_out_of_memory(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            fail()
        return forward(*args, **kwargs)

    model.forward = forward_until_out_of_memory
    cfg = dataclasses.replace(config_module.load([PARAMS]).method("full", 0).train, max_steps=6, eval_every=100,
                              batch_size=2, threads=1, bf16=False)
    examples = [([5, 6, 7, 1], [7, 1]) for _ in range(8)]
    with pytest.raises(TrainingOutOfMemory) as caught:
        fine_tune(model, examples, examples[:2], cfg, pad_id=0, checkpoint_dir=tmp_path / "checkpoint",
                  fingerprint="oom", accelerator=make_accelerator(cfg))
    message = str(caught.value)
    assert message.startswith("out of memory after 2 of 6 training steps on cpu (")
    assert "train.batch_size is 2, train.grad_accum_steps 1, train.gradient_checkpointing false" in message
    assert "\n" not in message and caught.value.__cause__ is not None


def test_out_of_memory_in_evaluate_names_the_evaluate_knobs(tmp_path, capsys, no_stage):
    def out_of_memory(cfg, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    no_stage.stage.run = out_of_memory
    for name in ("variants", "models", "model", "results"):
        (tmp_path / name).mkdir()
    code = cli.main(["evaluate", "--params", str(PARAMS), "--method", "full", "--seed", "0",
                     *[arg for name in ("variants", "models", "model", "results")
                       for arg in (f"--{name}", str(tmp_path / name))]])
    lines = error_lines(capsys)
    evaluate = config_module.load([PARAMS]).evaluate
    assert code == 2 and len(lines) == 1
    assert (f"method 'full' seed 0: out of memory (CUDA out of memory. Tried to allocate 1.00 GiB); lower "
            f"evaluate.batch_size (now {evaluate.batch_size}) or evaluate.num_beams (now {evaluate.num_beams})"
            in lines[0])
