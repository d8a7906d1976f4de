"""Shared fixtures: a tiny T5 built from a config (no download), quiet progress."""
from __future__ import annotations

import os

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

# Whether the suite runs in CI (CI=true where it started, read before the next line sets it):
# a test that needs a tool (slurmctld) fails there when the tool is missing, instead of skipping.
STARTED_IN_CI = os.environ.get("CI") == "true"
os.environ.setdefault("CI", "true")  # progress bars off in tests


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
    """The pipeline's stages run once on the tiny configuration: real result files."""
    from stage_results import run_stages

    return run_stages(tmp_path_factory.mktemp("stage-results"))
