"""Shared fixtures: a tiny T5 built from a config (no download), quiet progress."""
from __future__ import annotations

import os

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

# Where the suite itself runs in CI (CI=true before the line below), tests whose system tool is
# missing fail instead of skipping (tests/required_tools.py); recorded first, since the suite
# then sets CI=true for everything it runs.
os.environ.setdefault("CFQA_REQUIRE_TOOLS", "1" if os.environ.get("CI", "").lower() == "true" else "0")
os.environ.setdefault("CI", "true")  # progress bars off in tests


# `make test` hands each pytest-xdist worker whole files (--dist loadfile), so a module fixture is
# built once, except that the files sharing the tiny Snakemake run (tests/smoke_run.py) are one
# unit, run by one worker one after another: the smoke tests change that run's files for a while.
# (pytest-xdist 3.8's --dist loadgroup would say this with marks, but it groups by renaming node
# ids, which pytest 9 ignores.) Units start longest first (--no-loadscope-reorder keeps this
# order), so no long one starts last: the units over 40 s, measured with `make test` on 2 cores.
LONGEST_FIRST = ("tiny-snakemake-run", "test_dvc_pipeline.py", "test_kill.py", "test_image.py",
                 "test_full_disk.py", "test_workflow_config_check.py", "test_profile_roots.py",
                 "test_causal_smoke.py", "test_report.py", "test_tracking.py", "test_data_parallel.py",
                 "test_hub.py")


def work_unit(path: str) -> str:
    """The unit of work a test file belongs to: its name, or the shared run's group."""
    from smoke_run import SMOKE_GROUP, SMOKE_MODULES

    name = path.rsplit("/", 1)[-1]
    return SMOKE_GROUP if name in SMOKE_MODULES else name


@pytest.hookimpl(optionalhook=True)          # pytest-xdist's hook: absent with `-p no:xdist`
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedRunScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(super()._split_scope(nodeid))

    return SharedRunScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid.split("::", 1)[0]), len(rank)))


def tiny_t5_config(**overrides) -> T5Config:
    # d_kv = d_model / num_heads keeps peft's prefix tuning shape-consistent.
    values = dict(vocab_size=96, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                  num_decoder_layers=2, relative_attention_num_buckets=8, dropout_rate=0.0,
                  pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                  tie_word_embeddings=True, feed_forward_proj="relu")
    values.update(overrides)
    return T5Config(**values)


def tiny_t5(seed: int = 0, **overrides) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(tiny_t5_config(**overrides))
    model.eval()
    return model


@pytest.fixture(autouse=True)
def one_thread():
    """Tests train small models on one thread: the machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def t5_model():
    return tiny_t5()


@pytest.fixture(scope="session")
def stage_results(tmp_path_factory):
    """The pipeline's stages run once per test run on the tiny configuration: real result files,
    read (never changed) by every test and every xdist worker that asks for them."""
    from stage_results import run_stages, shared_run_stages

    if "PYTEST_XDIST_WORKER" not in os.environ:    # no xdist worker: this process is the whole run
        return run_stages(tmp_path_factory.mktemp("stage-results"))
    return shared_run_stages(tmp_path_factory.getbasetemp().parent / "stage-results")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The tiny configuration run by Snakemake (tests/smoke_run.py); the modules using it are
    smoke_run.SMOKE_MODULES, which `make test` runs in one worker."""
    from smoke_run import run_smoke

    return run_smoke(tmp_path_factory.mktemp("smoke") / "project")
