"""The Snakefile removes the locks of a Snakemake that is no longer running, never a live one's:
liveness is a flock each Snakemake of the workflow holds for as long as its process lives."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from pipeline_support import tool_env

HOLDER = """
import sys, time
from cfqa import snakemake_start
snakemake_start.clear_dead_locks(sys.argv[1])
print("holding", flush=True)
time.sleep(300)
"""
CHECK = """
import json, sys
from cfqa import snakemake_start
print(json.dumps([str(p) for p in snakemake_start.clear_dead_locks(sys.argv[1])]))
"""


def check(state: Path) -> list[str]:
    """What a starting Snakemake would remove, run in a process of its own (as Snakemake is)."""
    done = subprocess.run([sys.executable, "-c", CHECK, str(state)], env=tool_env(), capture_output=True,
                          text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def test_the_locks_of_a_live_snakemake_stay_and_a_dead_ones_go(tmp_path):
    state = tmp_path / ".snakemake"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(state)], env=tool_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        locks = [state / "locks" / "0.input.lock", state / "locks" / "0.output.lock"]
        for lock in locks:
            lock.parent.mkdir(parents=True, exist_ok=True)
            lock.write_text("data/raw\n")
        assert check(state) == [] and all(lock.is_file() for lock in locks)     # its owner is alive
    finally:
        holder.send_signal(signal.SIGKILL)       # no cleanup: as an OOM kill or a lost terminal leaves it
        holder.wait(timeout=60)
    assert check(state) == [str(lock) for lock in locks]
    assert not any(lock.exists() for lock in locks)
    assert check(state) == []                    # nothing left to remove
