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


# `make test` hands each pytest-xdist worker whole groups (--dist loadgroup): a module is a group
# unless it names a shared one (pytest.mark.xdist_group), so a module fixture is built once, and
# modules sharing a session fixture that changes files run in one worker, one after another.
# Groups start longest first (minutes on 2 cores, `make test`), so no long one starts last.
LONGEST_GROUPS = ("test_dvc_pipeline.py", "tiny-snakemake-run", "test_kill.py", "test_profile_roots.py",
                  "test_image.py")


def xdist_group(item: pytest.Item) -> str:
    marker = item.get_closest_marker("xdist_group")
    return marker.args[0] if marker else item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Before pytest-xdist reads the groups: every item gets one, the longest groups first."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(xdist_group(item)))
    rank = {name: place for place, name in enumerate(LONGEST_GROUPS)}
    items.sort(key=lambda item: rank.get(xdist_group(item), len(rank)))


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
def stage_results(tmp_path_factory, worker_id):
    """The pipeline's stages run once per test run on the tiny configuration: real result files,
    read (never changed) by every test and every xdist worker that asks for them."""
    from stage_results import run_stages, shared_run_stages

    if worker_id == "master":                   # no xdist: this process is the whole run
        return run_stages(tmp_path_factory.mktemp("stage-results"))
    return shared_run_stages(tmp_path_factory.getbasetemp().parent / "stage-results")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The tiny configuration run by Snakemake (tests/smoke_run.py); modules using it name
    smoke_run.SMOKE_GROUP as their xdist_group."""
    from smoke_run import run_smoke

    return run_smoke(tmp_path_factory.mktemp("smoke") / "project")
