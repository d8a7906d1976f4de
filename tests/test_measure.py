"""Training-step memory on modules whose sizes can be worked out by hand."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cfqa.model.measure import (SavedActivations, PeakMemory, training_step_memory,
                          unique_storage_bytes)

FLOAT = 4   # bytes per float32


class SquaredLinear(nn.Module):
    """loss = sum(linear(x) ** 2): addmm saves x (for the weight's gradient), pow saves y."""

    def __init__(self, inputs: int = 8, outputs: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(inputs, outputs)

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(loss=self.linear(x).pow(2).sum())


def test_linear_layer_with_adam_matches_hand_counts():
    model = SquaredLinear(inputs=8, outputs=4)
    x = torch.randn(3, 8)
    memory = training_step_memory(model, {"x": x}, torch.optim.Adam(model.parameters()))
    weights = (8 * 4 + 4) * FLOAT
    assert memory.parameter_bytes == memory.trainable_parameter_bytes == weights
    assert memory.gradient_bytes == weights
    # Adam: exp_avg and exp_avg_sq per parameter, plus one float32 step counter per tensor.
    assert memory.optimizer_state_bytes == 2 * weights + 2 * FLOAT
    assert memory.activation_bytes == 3 * 8 * FLOAT + 3 * 4 * FLOAT     # x and y
    assert memory.saved_tensor_count == 2
    assert memory.total_bytes == 4 * weights + 2 * FLOAT + (3 * 8 + 3 * 4) * FLOAT
    assert memory.cuda_peak_allocated_bytes is None
    assert memory.as_dict()["total_bytes"] == memory.total_bytes
    assert all(p.grad is None for p in model.parameters())              # gradients cleared after


def test_saved_parameters_are_not_activations():
    """With x requiring grad, addmm also saves the weight; that is a parameter, not an activation."""
    model = SquaredLinear()
    x = torch.randn(3, 8, requires_grad=True)
    memory = training_step_memory(model, {"x": x}, torch.optim.SGD(model.parameters(), lr=0.1))
    assert memory.saved_tensor_count == 3
    assert memory.activation_bytes == (3 * 8 + 3 * 4) * FLOAT
    assert memory.optimizer_state_bytes == 0                            # plain SGD keeps no state


def test_frozen_parameters_have_no_gradient_or_state():
    model = SquaredLinear()
    model.linear.bias.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    memory = training_step_memory(model, {"x": torch.randn(3, 8)},
                                  torch.optim.SGD(trainable, lr=0.1, momentum=0.9))
    assert memory.parameter_bytes == (8 * 4 + 4) * FLOAT
    assert memory.trainable_parameter_bytes == memory.gradient_bytes == 8 * 4 * FLOAT
    assert memory.optimizer_state_bytes == 8 * 4 * FLOAT                # one momentum buffer


def test_one_storage_counts_once():
    tensor = torch.zeros(5, 6)
    assert unique_storage_bytes([tensor, tensor[1:], tensor.t(), tensor.view(-1)]) == 5 * 6 * FLOAT
    weight = torch.randn(6, requires_grad=True)
    with SavedActivations() as saved:
        y = torch.randn(5, 6) * weight
        (y * y).sum()       # mul saves y twice: one storage
    assert saved.count == 3 and saved.bytes == 2 * 5 * 6 * FLOAT         # the random input and y


def test_no_grad_region_saves_nothing():
    weight = torch.randn(4, 4, requires_grad=True)
    with SavedActivations() as saved, torch.no_grad():
        torch.tanh(torch.randn(2, 4) @ weight)
    assert saved.count == 0 and saved.bytes == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_memory_is_the_growth_inside_the_block_only():
    earlier = torch.ones(96 * 1024 * 1024 // FLOAT)                     # an earlier, higher peak
    del earlier
    with PeakMemory(cuda=False) as peak:
        block = torch.ones(32 * 1024 * 1024 // FLOAT)                   # 32 MiB, every page touched
        del block
    # The block's 32 MiB are seen although they are freed; the earlier 96 MiB are not.
    assert 0.9 * 32 * 2**20 <= peak.peak_bytes < 64 * 2**20
    assert "peak RSS" in peak.measure
