"""The first-target-token probe: rank and probability of an answer's first token at the first
answer position, for an encoder-decoder and for a decoder-only model with a prompt prepended."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from cfqa.config import registry_options
from cfqa.methods.registry import get_method
from cfqa.training.first_token import first_token_scores
from test_training_loop import EOS, PAD, build, random_inputs, run, train_config

MARKER = 5       # every target starts with this token, as every DisentQA target starts with its marker


def marked_task(count: int = 16) -> list[tuple[list[int], list[int]]]:
    return [(source, [MARKER] + source[:3] + [EOS]) for source in random_inputs(np.random.default_rng(3), count)]


def test_ranks_and_probabilities_match_the_first_decoder_step():
    model = build("full")
    examples = marked_task(6)
    scores = first_token_scores(model, examples, PAD, batch_size=4, device=torch.device("cpu"))
    with torch.no_grad():
        ranks, probabilities = [], []
        for source, target in examples:
            logits = model(input_ids=torch.tensor([source]), decoder_input_ids=torch.tensor([[0]])).logits[0, 0]
            ranks.append(int((logits > logits[target[0]]).sum()))
            probabilities.append(float(torch.softmax(logits, -1)[target[0]]))
    assert scores.rank_median == sorted(ranks)[(len(ranks) - 1) // 2]
    assert scores.probability_pct == pytest.approx(100 * np.mean(probabilities), rel=1e-5)
    assert scores.top1_pct == pytest.approx(100 * np.mean([r == 0 for r in ranks]))


def test_training_brings_the_marker_to_the_top(tmp_path):
    model = build("full")
    data = marked_task()
    before = first_token_scores(model, data, PAD, 8, torch.device("cpu"))
    run(model, data, data[:8], train_config(max_steps=30, eval_every=30), tmp_path / "ckpt")
    after = first_token_scores(model, data, PAD, 8, torch.device("cpu"))
    assert before.rank_median > 0 and before.top1_pct < 50
    assert (after.rank_median, after.top1_pct) == (0, 100.0) and after.probability_pct > 50


def test_a_prompt_on_a_decoder_only_model_shifts_the_answer_position():
    torch.manual_seed(0)
    config = GPTNeoConfig(vocab_size=64, max_position_embeddings=64, hidden_size=32, num_layers=2, num_heads=4,
                          attention_types=[[["global", "local"], 1]], window_size=64, intermediate_size=64,
                          bos_token_id=0, eos_token_id=0, pad_token_id=1)
    model = get_method("prompt").build(GPTNeoForCausalLM(config).eval(), registry_options("prompt", {"num_virtual_tokens": 4}))
    examples = [([7, 8, 9, 10], [MARKER, 11, 0]), ([12, 13], [MARKER, 14, 0])]
    scores = first_token_scores(model, examples, pad_id=1, batch_size=2, device=torch.device("cpu"))
    with torch.no_grad():
        probabilities = [float(torch.softmax(model(input_ids=torch.tensor([source])).logits[0, -1], -1)[MARKER])
                         for source, _ in examples]
    assert scores.probability_pct == pytest.approx(100 * np.mean(probabilities), rel=1e-5)
