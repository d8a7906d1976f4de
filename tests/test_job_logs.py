"""A Snakemake job's stderr and stdout land in its `stderr` log and still reach the terminal: a
job failing on bad input leaves the CLI's one-line error in both log files and on Snakemake's
stderr, the failure's exit status survives the pipe into tee, and an interrupted job's last
line is still written."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cfqa.dag import VALIDATED, logged, stage
from cfqa.nq.manifest import write_manifest
from pipeline_support import PROJECT, tool_env
from project_copy import copy_project

NQ_FIXTURES = PROJECT / "tests" / "fixtures" / "nq"
ERROR = ("ERROR cfqa: cfqa prepare: data/raw/train.jsonl.gz:2: expected one JSON object per line: "
         "JSON is malformed")


@pytest.fixture(scope="module")
def failed_prepare(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Only the prepare job runs (its inputs are in place), on a train file whose second line
    is not JSON."""
    root = copy_project(tmp_path_factory.mktemp("job-logs"))
    (root / VALIDATED).parent.mkdir(parents=True)
    (root / VALIDATED).write_text('{"valid": true}\n')
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(NQ_FIXTURES / "bad_malformed_line.jsonl.gz", raw / "train.jsonl.gz")
    shutil.copy(NQ_FIXTURES / "simplified_train.jsonl.gz", raw / "dev.jsonl.gz")
    write_manifest(raw, "test")                  # as download leaves it: prepare checks the files against it
    # Progress bars on, as on a terminal: they are stderr the CLI writes outside its records.
    env = {key: value for key, value in tool_env(CFQA_PROGRESS="1").items() if key != "CI"}
    result = subprocess.run(["snakemake", "--cores", "1", "--allowed-rules", "prepare", "--", "data/prepared"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=300)
    return root, result


@pytest.mark.slow
def test_the_job_fails_with_the_stage_exit_status(failed_prepare):
    _, result = failed_prepare
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Error in rule prepare" in output
    # pipefail: the status is cfqa's (2, bad input), not tee's 0.
    assert "exit status 2" in output or "non-zero exit status 2" in output, output


@pytest.mark.slow
def test_the_one_line_error_is_in_the_job_log_and_on_the_terminal(failed_prepare):
    root, result = failed_prepare
    job_log = (root / stage("prepare").stderr_log).read_text()
    assert ERROR in job_log
    assert ERROR in result.stderr
    # One line on the terminal and in the job's stderr log: the traceback is the CLI log's only.
    assert "Traceback" not in job_log and "Traceback" not in result.stderr
    cli_log = (root / stage("prepare").log).read_text()
    assert ERROR in cli_log and "Traceback" in cli_log


@pytest.mark.slow
def test_the_job_log_holds_what_the_cli_prints_outside_its_records(failed_prepare):
    root, _ = failed_prepare
    job_log = (root / stage("prepare").stderr_log).read_text()
    cli_log = (root / stage("prepare").log).read_text()
    # tqdm's bar reading the train file: "train.jsonl.gz:   0%|..."
    assert "train.jsonl.gz:" in job_log and "%|" in job_log
    assert "%|" not in cli_log


def test_the_shell_keeps_the_status_of_a_failing_command(tmp_path):
    """What the test above relies on, in isolation: bash strict mode, as Snakemake runs a
    job's shell, returns the command's status through the pipe and writes its stderr to the
    log and to stderr."""
    shell = "set -euo pipefail; " + logged("sh -c 'echo out; echo problem >&2; exit 3'", str(tmp_path / "job.log"))
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 3
    assert sorted((tmp_path / "job.log").read_text().split()) == ["out", "problem"]
    assert sorted(result.stderr.split()) == ["out", "problem"] and result.stdout == ""


def test_an_interrupted_job_still_logs_its_last_line(tmp_path):
    """Ctrl-C reaches the whole job; `tee -i` stays to write what the command prints on the way out."""
    script = ("import sys, time\nprint('started', file=sys.stderr, flush=True)\ntry:\n    time.sleep(60)\n"
              "except KeyboardInterrupt:\n    print('interrupted', file=sys.stderr, flush=True)\n    sys.exit(130)\n")
    (tmp_path / "job.py").write_text(script)
    log = tmp_path / "job.log"
    shell = "set -euo pipefail; " + logged(f"{sys.executable} {tmp_path / 'job.py'}", str(log))
    # SIGINT's default action in the job, as a terminal gives it: a child inherits an ignored
    # SIGINT, and a library imported earlier in the test session may have set one in this process.
    job = subprocess.Popen(["bash", "-c", shell], start_new_session=True, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while "started" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGINT)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 130
    assert log.read_text().split() == ["started", "interrupted"] == stderr.split()


def test_progress_bars_stay_on_when_the_job_stderr_is_a_terminal(tmp_path):
    """The CLI sees only the pipe into tee; the job's shell tells it whether a terminal is at the
    other end (CFQA_PROGRESS=1), so a user running Snakemake in a terminal still sees bars."""
    import pty
    probe = logged(f"{sys.executable} -c 'import os; print(os.environ.get(\"CFQA_PROGRESS\"))'",
                   str(tmp_path / "job.log"))
    env = {key: value for key, value in os.environ.items() if key != "CFQA_PROGRESS"}
    piped = subprocess.run(["bash", "-c", "set -euo pipefail; " + probe], capture_output=True, text=True, env=env)
    assert piped.returncode == 0 and piped.stderr.split() == ["None"]
    primary, secondary = pty.openpty()
    try:
        with_tty = subprocess.run(["bash", "-c", "set -euo pipefail; " + probe], stdout=subprocess.PIPE,
                                  stderr=secondary, env=env, timeout=60)
    finally:
        os.close(secondary)
    assert with_tty.returncode == 0
    assert (tmp_path / "job.log").read_text().split() == ["1"]
    os.close(primary)
