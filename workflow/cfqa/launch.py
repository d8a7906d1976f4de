"""How a Snakemake job starts its stage's command (cfqa.dag.job_shell):

    python -m cfqa.launch --stage S --code HASH [--gpus N [--data-parallel]] -- cfqa ...

1. The code about to run must be the checkout's. HASH is the stage's code hash Snakemake
   computed over the checkout (cfqa.dag.code_hash, the rule's `code` param); this process
   hashes the same files of the package it imports, which the command will import too: the
   checkout's workflow/ (the job puts it first on PYTHONPATH, and apptainer binds the working
   directory) or, where the checkout is not visible (a Kubernetes pod), an image's copy. A
   difference stops the job with one line naming both, exit 2: results are never attributed to
   code that did not produce them.
2. On a box whose GPUs the jobs share (CFQA_GPU_DEVICES, a comma-separated device list the
   Snakefile sets when the run counts a `gpu` resource: workflow/profiles/local-gpus), a GPU
   stage's job takes N of those devices, one exclusive lock file per device, and sees only them
   (CUDA_VISIBLE_DEVICES). Without CFQA_GPU_DEVICES nothing is pinned: a cluster scheduler
   (SLURM, Kubernetes) gives the job its devices itself.
3. With --data-parallel and N > 1, the command runs as N processes (`accelerate launch`), one
   per device; the stage's rank 0 alone writes outputs.
The command then replaces this process (exec: same pid, so signals reach it directly), and
inherits the lock files, which the kernel releases when it exits, however it ends.

In-house because no library does this: Snakemake's `gpu` resource only counts GPUs (it does not
say which device a job gets), and GPU schedulers for one box run commands of their own queue.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path

import cfqa
from cfqa.dag.code import code_hash

BAD_INPUT_EXIT = 2
DEVICES_VARIABLE = "CFQA_GPU_DEVICES"
LOCK_DIR_VARIABLE = "CFQA_GPU_LOCK_DIR"
# How often a job waiting for a device tries again (another run on the box holds them all).
RETRY_SECONDS = 2.0


class LaunchRefused(Exception):
    """The job must not start; the message is its one line."""


def package_root() -> Path:
    """The project root of the cfqa package this Python imports (its workflow/ parent)."""
    return Path(cfqa.__file__).resolve().parents[2]


def check_code(stage: str, expected: str) -> None:
    """LaunchRefused unless the stage's code here hashes to `expected` (the checkout's)."""
    root = package_root()
    try:
        found = code_hash(stage, root)
    except FileNotFoundError as error:        # the image lacks a file the checkout's stage runs
        found = f"incomplete ({error})"
    if found != expected:
        raise LaunchRefused(
            f"stage {stage}: the code this job would run ({root / 'workflow' / 'cfqa'}, code sha256 {found[:16]}) "
            f"is not the checkout's (code sha256 {expected[:16]}, as Snakemake hashed it in {Path.cwd()}): "
            f"rebuild the image (containers/README.md) or run the job where the checkout's workflow/ is visible")


def lock_dir() -> Path:
    """One lock file per device, shared by every job on the box: under the system's temporary
    directory unless CFQA_GPU_LOCK_DIR names another."""
    return Path(os.environ.get(LOCK_DIR_VARIABLE) or Path(tempfile.gettempdir()) / "cfqa-gpu-locks")


def take_devices(devices: list[str], count: int, locks: Path) -> tuple[list[str], list[int]]:
    """(device ids, their open lock descriptors): `count` devices of `devices` whose lock no
    other process holds, waiting while fewer are free."""
    if count > len(devices):
        raise LaunchRefused(f"the job asks for {count} GPUs; {DEVICES_VARIABLE} lists {len(devices)} "
                            f"({','.join(devices)})")
    locks.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        held: list[tuple[str, int]] = []
        for device in devices:
            fd = os.open(locks / f"gpu{device}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held.append((device, fd))
            if len(held) == count:
                return [d for d, _ in held], [fd for _, fd in held]
        for _, fd in held:
            os.close(fd)
        if not waited:
            print(f"cfqa.launch: waiting for {count} free GPU(s) of {','.join(devices)} (locks in {locks})",
                  file=sys.stderr, flush=True)
            waited = True
        time.sleep(RETRY_SECONDS)


def data_parallel(command: list[str], processes: int) -> list[str]:
    """`cfqa ARGS` as `processes` processes of one node through accelerate (torchrun): one per
    GPU, or on the CPU over gloo (train.device cpu). Port 0: a free port, so that several such
    jobs on one box do not collide."""
    if not command or Path(command[0]).name != "cfqa":
        raise LaunchRefused(f"--data-parallel runs the cfqa CLI, got {' '.join(command[:1]) or 'nothing'}")
    return ["accelerate", "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "cfqa.cli", *command[1:]]


def prepare(args: argparse.Namespace) -> list[str]:
    """The command to exec, after the checks; pins devices (environment, held locks)."""
    if not args.command:
        raise LaunchRefused("no command after --")
    check_code(args.stage, args.code)
    command = list(args.command)
    gpus = args.gpus or 0
    listed = os.environ.get(DEVICES_VARIABLE, "").strip()
    if gpus and listed:
        devices, fds = take_devices([d.strip() for d in listed.split(",") if d.strip()], gpus, lock_dir())
        for fd in fds:
            os.set_inheritable(fd, True)     # held by the command until it exits
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        print(f"cfqa.launch: stage {args.stage} pinned to CUDA device(s) {','.join(devices)} "
              f"(CUDA_VISIBLE_DEVICES; locks in {lock_dir()})", file=sys.stderr, flush=True)
    if args.data_parallel and gpus > 1:
        command = data_parallel(command, gpus)
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfqa.launch", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True, help="the stage the command runs (cfqa.dag)")
    parser.add_argument("--code", required=True, help="the checkout's code hash of the stage")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs the job holds (its `gpu` resource)")
    parser.add_argument("--data-parallel", action="store_true", help="one process per GPU when gpus > 1")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    try:
        command = prepare(args)
    except LaunchRefused as error:
        print(f"cfqa.launch: {error}", file=sys.stderr)
        return BAD_INPUT_EXIT
    sys.stdout.flush()
    os.execvp(command[0], command)
    return 0       # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
