"""Optimizer parameter groups: weight decay on matrices (dim >= 2), none on biases and norms."""
from __future__ import annotations

import pytest
import torch

from cfqa.training.optimization import make_optimizer, make_schedule, parameter_groups
from conftest import tiny_t5

OPTIMIZERS = ("adamw", "adafactor")


class BiasedBlock(torch.nn.Module):
    """Layers with biases and a LayerNorm (weight and bias), unlike T5's bias-free layers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(10, 6)
        self.linear = torch.nn.Linear(6, 6)
        self.norm = torch.nn.LayerNorm(6)
        self.frozen = torch.nn.Linear(6, 2)
        self.frozen.requires_grad_(False)
        self.scale = torch.nn.Parameter(torch.ones(1))   # a scalar gate


def t5_with_frozen_part():
    model = tiny_t5()
    model.encoder.block[0].requires_grad_(False)
    return model


def names_by_group(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[float, set[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    groups: dict[float, set[str]] = {}
    for group in optimizer.param_groups:
        groups.setdefault(group["weight_decay"], set()).update(name_of[id(p)] for p in group["params"])
    return groups


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("build", [BiasedBlock, t5_with_frozen_part])
def test_decay_only_trainable_matrices(name, build):
    model = build()
    optimizer = make_optimizer(model.parameters(), name, lr=1e-3, weight_decay=0.1)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    groups = names_by_group(model, optimizer)
    assert set(groups) == {0.1, 0.0}
    assert groups[0.1] == {n for n, p in trainable.items() if p.dim() >= 2}
    assert groups[0.0] == {n for n, p in trainable.items() if p.dim() < 2}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)


def test_which_t5_and_torch_parameters_decay():
    block = BiasedBlock()
    groups = names_by_group(block, make_optimizer(block.parameters(), "adamw", 1e-3, 0.1))
    assert groups == {0.1: {"embed.weight", "linear.weight"},
                      0.0: {"linear.bias", "norm.weight", "norm.bias", "scale"}}
    t5 = t5_with_frozen_part()
    groups = names_by_group(t5, make_optimizer(t5.parameters(), "adamw", 1e-3, 0.1))
    # T5LayerNorm has only a weight; embeddings (and the relative position table) decay.
    assert "encoder.final_layer_norm.weight" in groups[0.0]
    assert "decoder.block.0.layer.0.layer_norm.weight" in groups[0.0]
    assert {"shared.weight", "decoder.block.0.layer.0.SelfAttention.q.weight",
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"} <= groups[0.1]
    assert not any(name.startswith("encoder.block.0.") for names in groups.values() for name in names)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_no_decay_is_one_group(name):
    block = BiasedBlock()
    optimizer = make_optimizer(block.parameters(), name, lr=1e-3, weight_decay=0.0)
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["weight_decay"] == 0.0
    assert len(optimizer.param_groups[0]["params"]) == sum(p.requires_grad for p in block.parameters())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_step_decays_matrices_and_leaves_vectors(name):
    # With zero gradients both optimizers' updates are 0, so a step is decoupled weight decay
    # alone: matrices shrink by (1 - lr * decay), vectors stay put.
    block = BiasedBlock()
    block.norm.weight.data.fill_(1.5)
    before = {n: p.detach().clone() for n, p in block.named_parameters()}
    lr, decay = 0.1, 0.5
    optimizer = make_optimizer(block.parameters(), name, lr=lr, weight_decay=decay)
    for p in block.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    for n, p in block.named_parameters():
        expected = before[n] * (1 - lr * decay) if p.requires_grad and p.dim() >= 2 else before[n]
        torch.testing.assert_close(p.detach(), expected, msg=n)


def test_only_vectors_or_only_matrices_trainable():
    vectors = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.zeros(()))]
    assert [len(g["params"]) for g in parameter_groups(vectors, 0.1)] == [2]
    assert parameter_groups(vectors, 0.1)[0]["weight_decay"] == 0.0
    matrix = [torch.nn.Parameter(torch.ones(2, 2))]
    assert [(len(g["params"]), g["weight_decay"]) for g in parameter_groups(matrix, 0.1)] == [(1, 0.1)]


def test_schedule_drives_every_group():
    block = BiasedBlock()
    optimizer = make_optimizer(block.parameters(), "adamw", lr=1.0, weight_decay=0.1)
    schedule = make_schedule(optimizer, warmup_steps=4, total_steps=10)
    optimizer.step()
    schedule.step()
    assert [g["lr"] for g in optimizer.param_groups] == [0.25, 0.25]


def test_errors_name_the_problem():
    block = BiasedBlock()
    block.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_optimizer(block.parameters(), "adamw", 1e-3, 0.1)
    with pytest.raises(ValueError, match="optimizer must be adamw or adafactor, got 'sgd'"):
        make_optimizer(BiasedBlock().parameters(), "sgd", 1e-3, 0.1)


def test_scaling_vectors_stored_as_columns_are_not_decayed():
    """peft keeps (IA)^3's vectors as (d, 1) tensors: decay would pull them from 1 toward 0."""
    column, matrix = torch.nn.Parameter(torch.ones(8, 1)), torch.nn.Parameter(torch.ones(8, 4))
    groups = parameter_groups([column, matrix], 0.1)
    assert [[p is matrix for p in g["params"]] for g in groups] == [[True], [False]]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
