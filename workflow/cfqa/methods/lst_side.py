"""The side network of Ladder Side Tuning (Sung et al., 2022): a narrow T5-style encoder or
decoder stack that reads the frozen backbone's hidden states through learned down-projections
("rungs") and fuses them into its own stream with a learned gate after every layer.

Written as plain torch modules because no well-kept library provides LST (peft and adapters
have no side network). The layers mirror T5's (pre-norm RMS layer norm, unscaled dot-product
attention with a shared relative position bias, ReLU or gated feed-forward) so they can be
initialized from pruned backbone weights; dropout acts on the residual branches, the
feed-forward hidden layer and the side input, not on attention weights.

Shapes: a stack with L layers receives the backbone's L + 1 hidden states (the embeddings,
the input of layers 1..L-1, and the stack's normed output — what transformers returns as
`hidden_states`). The side state starts as rung 0; after side layer i it is fused with rung i+1:

    x_0 = down_0(h_0);   x_{i+1} = fuse_i(side_layer_i(x_i), down_{i+1}(h_{i+1}))

and the stack returns final_norm(x_L).

Generation: a side decoder can also run one position at a time (`start_cache`, `step`),
keeping each layer's self-attention keys and values, the cross-attention keys and values of
the side encoder's output, and the dynamic gate's running sum, so a generated token costs one
position of work instead of a rerun over the whole prefix.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.activations import ACT2FN
from transformers.models.t5.modeling_t5 import T5Attention

# The paper's gate is sigmoid(alpha / T) with T = 0.1: a low temperature lets a scalar gate move
# quickly at the learning rates used for the rest of the side network.
STATIC_GATE_TEMPERATURE = 0.1


@dataclass(frozen=True)
class SideShape:
    """Widths of one side stack, derived from the backbone config and the reduction factor."""

    backbone_width: int    # d_model of the backbone
    width: int             # d_model / r
    num_heads: int         # kept equal to the backbone's, so the relative bias copies over
    head_width: int        # d_kv / r
    ff_width: int          # d_ff / r
    gated: bool            # T5 v1.1 gated feed-forward (wi_0, wi_1)
    activation: str        # transformers activation name (relu, gelu_new, ...)
    num_buckets: int
    max_distance: int
    layer_norm_eps: float
    dropout: float

    @property
    def inner_width(self) -> int:
        return self.num_heads * self.head_width


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, the dtype's minimum where it is not."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(
        ~keep, torch.finfo(dtype).min)


class SideNorm(nn.RMSNorm):
    """T5's layer norm (RMS, scale only), computed in the weight's precision as T5 does
    under bf16 autocast."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden.to(self.weight.dtype))


class SideAttention(nn.Module):
    """T5 attention at side width: no 1/sqrt(d) scaling, bias and mask added to the scores."""

    def __init__(self, shape: SideShape, kv_width: int | None = None):
        super().__init__()
        self.num_heads, self.head_width = shape.num_heads, shape.head_width
        kv_width = kv_width or shape.width
        self.q = nn.Linear(shape.width, shape.inner_width, bias=False)
        self.k = nn.Linear(kv_width, shape.inner_width, bias=False)
        self.v = nn.Linear(kv_width, shape.inner_width, bias=False)
        self.o = nn.Linear(shape.inner_width, shape.width, bias=False)

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_width).transpose(1, 2)

    def keys_values(self, key_value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, heads, length, head_width) keys and values of `key_value`."""
        return self._heads(self.k(key_value)), self._heads(self.v(key_value))

    def forward(self, hidden: torch.Tensor, key_value: torch.Tensor,
                score_bias: torch.Tensor) -> torch.Tensor:
        return self.attend(hidden, *self.keys_values(key_value), score_bias)

    def attend(self, hidden: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               score_bias: torch.Tensor) -> torch.Tensor:
        query = self._heads(self.q(hidden))
        # torch's fused attention saves fewer intermediates for backward than softmax(q k^T) v
        # written out; scale=1 because T5 does not scale the scores. No dropout on the
        # attention weights (unlike T5): it would keep a mask per head and token pair.
        attended = nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=score_bias.to(query.dtype), scale=1.0)
        return self.o(attended.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1))


class SideFeedForward(nn.Module):
    def __init__(self, shape: SideShape):
        super().__init__()
        self.gated = shape.gated
        if self.gated:
            self.wi_0 = nn.Linear(shape.width, shape.ff_width, bias=False)
            self.wi_1 = nn.Linear(shape.width, shape.ff_width, bias=False)
        else:
            self.wi = nn.Linear(shape.width, shape.ff_width, bias=False)
        self.wo = nn.Linear(shape.ff_width, shape.width, bias=False)
        self.act = ACT2FN[shape.activation]
        self.dropout = nn.Dropout(shape.dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.gated:
            inner = self.act(self.wi_0(hidden)) * self.wi_1(hidden)
        else:
            inner = self.act(self.wi(hidden))
        return self.wo(self.dropout(inner))


class SideLayer(nn.Module):
    """One pre-norm T5 block: self-attention, cross-attention (decoder only), feed-forward."""

    def __init__(self, shape: SideShape, cross_width: int | None):
        super().__init__()
        self.self_norm = SideNorm(shape.width, eps=shape.layer_norm_eps)
        self.self_attention = SideAttention(shape)
        self.has_cross = cross_width is not None
        if self.has_cross:
            self.cross_norm = SideNorm(shape.width, eps=shape.layer_norm_eps)
            self.cross_attention = SideAttention(shape, kv_width=cross_width)
        self.ff_norm = SideNorm(shape.width, eps=shape.layer_norm_eps)
        self.feed_forward = SideFeedForward(shape)
        self.dropout = nn.Dropout(shape.dropout)

    def forward(self, hidden: torch.Tensor, self_bias: torch.Tensor,
                memory: torch.Tensor | None = None, memory_bias: torch.Tensor | None = None) -> torch.Tensor:
        normed = self.self_norm(hidden)
        hidden = hidden + self.dropout(self.self_attention(normed, normed, self_bias))
        if self.has_cross:
            hidden = hidden + self.dropout(self.cross_attention(self.cross_norm(hidden), memory, memory_bias))
        return hidden + self.dropout(self.feed_forward(self.ff_norm(hidden)))

    def step(self, hidden: torch.Tensor, self_bias: torch.Tensor, cache: "SideDecoderCache",
             index: int) -> torch.Tensor:
        """forward() for the newest positions of a decoder layer (layer `index` of the stack):
        their keys and values are appended to the cache and attended with the earlier ones."""
        normed = self.self_norm(hidden)
        key, value = self.self_attention.keys_values(normed)
        if cache.keys[index] is not None:
            key = torch.cat([cache.keys[index], key], dim=2)
            value = torch.cat([cache.values[index], value], dim=2)
        cache.keys[index], cache.values[index] = key, value
        hidden = hidden + self.dropout(self.self_attention.attend(normed, key, value, self_bias))
        hidden = hidden + self.dropout(self.cross_attention.attend(
            self.cross_norm(hidden), cache.memory_keys[index], cache.memory_values[index], cache.memory_bias))
        return hidden + self.dropout(self.feed_forward(self.ff_norm(hidden)))


@dataclass
class SideDecoderCache:
    """What a side decoder keeps between generation steps (one entry per layer)."""

    memory_keys: list[torch.Tensor]        # cross-attention keys of the side encoder's output
    memory_values: list[torch.Tensor]
    memory_bias: torch.Tensor              # additive mask of the padded memory positions
    keys: list[torch.Tensor | None] = field(default_factory=list)     # self-attention, so far
    values: list[torch.Tensor | None] = field(default_factory=list)
    fusion_sums: list[torch.Tensor | None] = field(default_factory=list)   # dynamic gate's running sum
    length: int = 0                        # positions decoded so far


def pooled_context(states: torch.Tensor, keep: torch.Tensor, causal: bool) -> torch.Tensor:
    """Mean over the valid positions (encoder) or over each position's prefix (decoder, so no
    position sees a later one): (batch, length, width) -> (batch, 1 or length, width)."""
    weights = keep.to(states.dtype).unsqueeze(-1)
    if causal:
        return (states * weights).cumsum(1) / weights.cumsum(1).clamp_min(1.0)
    return (states * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1.0)


class StaticGate(nn.Module):
    """x = mu * side + (1 - mu) * rung, mu = sigmoid(alpha / T): one learned scalar per layer
    (the paper's gate). alpha starts at 0, an even mix."""

    def __init__(self, shape: SideShape):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, side: torch.Tensor, rungs: list[torch.Tensor], keep: torch.Tensor,
                causal: bool) -> torch.Tensor:
        mu = torch.sigmoid(self.alpha / STATIC_GATE_TEMPERATURE)
        return mu * side + (1 - mu) * rungs[-1]

    def step(self, side: torch.Tensor, rungs: list[torch.Tensor], running: torch.Tensor | None,
             start: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Position-local: the newest positions alone give the same result."""
        return self.forward(side, rungs, None, True), running


class DynamicGate(nn.Module):
    """mu = sigmoid(w . pool([side; rung]) + b): the mix depends on the input. The pool is the
    masked mean over the sequence (encoder) or over each prefix (decoder). Zero-initialized,
    so it starts as the static gate does (mu = 0.5)."""

    def __init__(self, shape: SideShape):
        super().__init__()
        self.score = nn.Linear(2 * shape.width, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, side: torch.Tensor, rungs: list[torch.Tensor], keep: torch.Tensor,
                causal: bool) -> torch.Tensor:
        rung = rungs[-1]
        mu = torch.sigmoid(self.score(pooled_context(torch.cat([side, rung], dim=-1), keep, causal)))
        return mu * side + (1 - mu) * rung

    def step(self, side: torch.Tensor, rungs: list[torch.Tensor], running: torch.Tensor | None,
             start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's prefix mean for positions start.. (every decoder position is real),
        from `running`, the sum over positions before `start`."""
        rung = rungs[-1]
        pair = torch.cat([side, rung], dim=-1)
        if running is not None:
            pair = torch.cat([running, pair], dim=1)
        sums = pair.cumsum(1)
        counts = torch.arange(start + 1, start + 1 + side.shape[1], device=side.device, dtype=side.dtype)
        mu = torch.sigmoid(self.score(sums[:, -side.shape[1]:] / counts[None, :, None]))
        return mu * side + (1 - mu) * rung, sums[:, -1:]


class AttentionFusion(nn.Module):
    """Attention over depth: at each position the side layer's output queries itself and every
    rung so far (down-projected backbone states of layers 0..i+1 at the same position) and
    takes their softmax-weighted sum. Position-local, so it needs no causal mask."""

    def __init__(self, shape: SideShape):
        super().__init__()
        self.query = nn.Linear(shape.width, shape.width, bias=False)
        self.key = nn.Linear(shape.width, shape.width, bias=False)
        self.scale = shape.width ** -0.5

    def forward(self, side: torch.Tensor, rungs: list[torch.Tensor], keep: torch.Tensor,
                causal: bool) -> torch.Tensor:
        candidates = torch.stack([side, *rungs], dim=-2)                   # (B, T, n, w)
        scores = torch.einsum("btw,btnw->btn", self.query(side), self.key(candidates)) * self.scale
        weights = torch.softmax(scores.float(), dim=-1).to(side.dtype)
        return torch.einsum("btn,btnw->btw", weights, candidates)

    def step(self, side: torch.Tensor, rungs: list[torch.Tensor], running: torch.Tensor | None,
             start: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Position-local: the newest positions alone give the same result."""
        return self.forward(side, rungs, None, True), running


FUSION_MODULES = {"static": StaticGate, "dynamic": DynamicGate, "attention": AttentionFusion}
FUSIONS = tuple(FUSION_MODULES)


class SideStack(nn.Module):
    """A side encoder (causal=False) or decoder (causal=True, cross-attends `memory`)."""

    def __init__(self, shape: SideShape, num_layers: int, fusion: str, causal: bool,
                 memory_width: int | None = None):
        super().__init__()
        if fusion not in FUSION_MODULES:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.shape, self.causal = shape, causal
        self.down_projections = nn.ModuleList(
            nn.Linear(shape.backbone_width, shape.width, bias=False) for _ in range(num_layers + 1))
        self.relative_attention_bias = nn.Embedding(shape.num_buckets, shape.num_heads)
        self.layers = nn.ModuleList(
            SideLayer(shape, cross_width=memory_width if causal else None) for _ in range(num_layers))
        self.fusions = nn.ModuleList(FUSION_MODULES[fusion](shape) for _ in range(num_layers))
        self.final_norm = SideNorm(shape.width, eps=shape.layer_norm_eps)
        self.dropout = nn.Dropout(shape.dropout)
        self.gradient_checkpointing = False

    def position_bias(self, length: int, device: torch.device, query_start: int = 0) -> torch.Tensor:
        """(1, heads, length - query_start, length): queries at positions query_start..length-1
        over keys 0..length-1, bucketed exactly as the backbone's T5 attention does."""
        keys = torch.arange(length, device=device)
        relative = keys[None, :] - keys[query_start:, None]
        # The bucketing formula is T5's own; reused rather than restated.
        buckets = T5Attention._relative_position_bucket(
            relative, bidirectional=not self.causal, num_buckets=self.shape.num_buckets,
            max_distance=self.shape.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)

    def forward(self, backbone_states: tuple[torch.Tensor, ...], keep: torch.Tensor,
                memory: torch.Tensor | None = None, memory_keep: torch.Tensor | None = None) -> torch.Tensor:
        """`keep` (batch, length) marks real tokens; `memory_keep` the real memory tokens."""
        if len(backbone_states) != len(self.down_projections):
            raise ValueError(f"the side stack has {len(self.layers)} layers and needs "
                             f"{len(self.down_projections)} backbone hidden states, got {len(backbone_states)}")
        dtype = self.down_projections[0].weight.dtype
        rungs = [down(state.to(dtype)) for down, state in zip(self.down_projections, backbone_states)]
        length = keep.shape[1]
        allowed = keep[:, None, None, :].bool()
        if self.causal:
            allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=keep.device).tril()
        self_bias = self.position_bias(length, keep.device).to(dtype) + additive_mask(allowed, dtype)
        memory_bias = None
        if memory is not None:
            memory_bias = additive_mask(memory_keep[:, None, None, :].bool(), dtype)

        hidden = self.dropout(rungs[0])
        for index, (layer, fuse) in enumerate(zip(self.layers, self.fusions)):
            if self.gradient_checkpointing and self.training:
                side = checkpoint(layer, hidden, self_bias, memory, memory_bias, use_reentrant=False)
            else:
                side = layer(hidden, self_bias, memory, memory_bias)
            hidden = fuse(side, rungs[: index + 2], keep, self.causal)
        return self.dropout(self.final_norm(hidden))

    def start_cache(self, memory: torch.Tensor, memory_keep: torch.Tensor) -> SideDecoderCache:
        """An empty cache for `step`, holding the cross-attention keys and values of `memory`."""
        if not self.causal:
            raise ValueError("only a side decoder (causal=True) decodes step by step")
        dtype = self.down_projections[0].weight.dtype
        memory_kv = [layer.cross_attention.keys_values(memory) for layer in self.layers]
        empty = [None] * len(self.layers)
        return SideDecoderCache(memory_keys=[k for k, _ in memory_kv], memory_values=[v for _, v in memory_kv],
                                memory_bias=additive_mask(memory_keep[:, None, None, :].bool(), dtype),
                                keys=list(empty), values=list(empty), fusion_sums=list(empty))

    def step(self, backbone_states: tuple[torch.Tensor, ...], cache: SideDecoderCache) -> torch.Tensor:
        """forward() for the newest decoder positions, given the backbone's hidden states of those
        positions only; earlier positions come from `cache`, which is updated. Every decoder
        position is real (no padding inside the decoded prefix), as in generation."""
        if len(backbone_states) != len(self.down_projections):
            raise ValueError(f"the side stack has {len(self.layers)} layers and needs "
                             f"{len(self.down_projections)} backbone hidden states, got {len(backbone_states)}")
        dtype = self.down_projections[0].weight.dtype
        rungs = [down(state.to(dtype)) for down, state in zip(self.down_projections, backbone_states)]
        start, length = cache.length, cache.length + rungs[0].shape[1]
        self_bias = self.position_bias(length, rungs[0].device, query_start=start).to(dtype)
        if length - start > 1:   # several new positions: causal among themselves
            allowed = torch.ones(length, length, dtype=torch.bool, device=self_bias.device).tril()[start:]
            self_bias = self_bias + additive_mask(allowed[None, None], dtype)
        hidden = self.dropout(rungs[0])
        for index, (layer, fuse) in enumerate(zip(self.layers, self.fusions)):
            side = layer.step(hidden, self_bias, cache, index)
            hidden, cache.fusion_sums[index] = fuse.step(side, rungs[: index + 2], cache.fusion_sums[index], start)
        cache.length = length
        return self.dropout(self.final_norm(hidden))
