"""Ladder Side Tuning (Sung et al., 2022) for T5: a side network of width d_model / r reads the
frozen backbone's hidden states and predicts through the frozen LM head.

- The backbone runs under `torch.no_grad()`: no graph, no backward pass through it; it is kept
  in eval mode (a frozen feature extractor, no dropout noise in its states).
- The side encoder and side decoder (lst_side.py) are initialized by structured pruning of the
  backbone's weights: per stack, the d_model / r residual dimensions with the largest L2 norm
  over every weight that reads or writes the residual stream (q, k, v, wi columns; o, wo rows);
  per attention layer, in each head the d_kv / r dimensions with the largest norm over q, k, v
  rows and o columns; per feed-forward, the d_ff / r units with the largest norm over wi rows
  and wo columns. Layer norms and the relative position bias (all heads kept) are sliced or
  copied. The down-projections start as the selection of the kept residual dimensions and the
  up-projection as its transpose, so the initial side network is the pruned backbone.
- The side decoder cross-attends to the side encoder's output; its final state is
  up-projected to d_model and fed to the backbone's frozen LM head.

Options (cfqa.methods.options.LstOptions; values in params.yaml): reduction_factor r,
fusion (static | dynamic | attention, see lst_side.py: a learned scalar gate per layer, a
gate from the pooled context, or attention over the rungs so far at each position), dropout
(side network only), seed (initializes the attention fusion; null: from the run seed).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import Seq2SeqLMOutput

from cfqa.methods.base import MethodSpec, OptionsError, ParameterCounts, freeze, initialisation_rng
from cfqa.methods.options import LstOptions
from cfqa.methods.t5_layout import require_t5, t5_parameter_count
from cfqa.methods.lst_side import SideShape, SideStack


# ---------------------------------------------------------------------------- shapes

def side_shape(config: PretrainedConfig, options: LstOptions) -> SideShape:
    factor = options.reduction_factor
    for name in ("d_model", "d_kv", "d_ff"):
        if getattr(config, name) < factor:
            raise OptionsError(f"method 'lst': reduction_factor {factor} exceeds the backbone's "
                               f"{name} = {getattr(config, name)}")
    return SideShape(
        backbone_width=config.d_model, width=config.d_model // factor, num_heads=config.num_heads,
        head_width=config.d_kv // factor, ff_width=config.d_ff // factor,
        gated=bool(config.is_gated_act), activation=config.dense_act_fn,
        num_buckets=config.relative_attention_num_buckets,
        max_distance=config.relative_attention_max_distance,
        layer_norm_eps=config.layer_norm_epsilon, dropout=options.dropout)


def closed_form_counts(config: PretrainedConfig, options: LstOptions) -> ParameterCounts:
    require_t5(config, "lst")
    shape = side_shape(config, options)
    d, w, inner, ff = config.d_model, shape.width, shape.inner_width, shape.ff_width
    attention = 4 * w * inner                           # q, k, v, o
    feed_forward = (3 if shape.gated else 2) * w * ff   # wi (or wi_0 + wi_1), wo
    fusion = {"static": 1, "dynamic": 2 * w + 1, "attention": 2 * w * w}[options.fusion]
    per_stack = (shape.num_buckets * shape.num_heads    # relative position bias
                 + w)                                   # final norm
    encoder_layer = attention + feed_forward + 2 * w + fusion
    decoder_layer = 2 * attention + feed_forward + 3 * w + fusion
    rungs = (config.num_layers + 1 + config.num_decoder_layers + 1) * d * w
    trainable = (2 * per_stack + rungs
                 + config.num_layers * encoder_layer + config.num_decoder_layers * decoder_layer
                 + w * d)                               # up-projection
    return ParameterCounts(trainable=trainable, total=t5_parameter_count(config) + trainable)


# ---------------------------------------------------------------------------- pruning

def top_indices(importance: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` largest entries, in ascending index order."""
    return torch.topk(importance, keep).indices.sort().values


def _column_norms(weights: list[torch.Tensor]) -> torch.Tensor:
    return sum(w.float().pow(2).sum(0) for w in weights)


def _row_norms(weights: list[torch.Tensor]) -> torch.Tensor:
    return sum(w.float().pow(2).sum(1) for w in weights)


def _attention_modules(block: nn.Module) -> list[nn.Module]:
    modules = [block.layer[0].SelfAttention]
    if len(block.layer) == 3:
        modules.append(block.layer[1].EncDecAttention)
    return modules


def _ff_in(ff: nn.Module) -> list[nn.Linear]:
    return [ff.wi_0, ff.wi_1] if hasattr(ff, "wi_0") else [ff.wi]


def residual_indices(stack: nn.Module, width: int) -> torch.Tensor:
    """The residual dimensions a side stack keeps: largest L2 norm over the stack's weights
    that read the residual (columns) or write it (rows). Cross-attention k and v read the
    encoder's stream, so they do not count here."""
    readers, writers = [], []
    for block in stack.block:
        self_attention = block.layer[0].SelfAttention
        readers += [self_attention.q.weight, self_attention.k.weight, self_attention.v.weight]
        writers.append(self_attention.o.weight)
        if len(block.layer) == 3:
            cross = block.layer[1].EncDecAttention
            readers.append(cross.q.weight)
            writers.append(cross.o.weight)
        ff = block.layer[-1].DenseReluDense
        readers += [lin.weight for lin in _ff_in(ff)]
        writers.append(ff.wo.weight)
    importance = _column_norms(readers) + _row_norms(writers)
    return top_indices(importance, width)


def head_indices(attention: nn.Module, num_heads: int, head_width: int) -> torch.Tensor:
    """Per head, the `head_width` inner dimensions with the largest norm over q, k, v rows and
    o columns (so every head keeps matching query/key and value/output dimensions)."""
    importance = _row_norms([attention.q.weight, attention.k.weight, attention.v.weight]) \
        + _column_norms([attention.o.weight])
    per_head = importance.view(num_heads, -1)
    full_head_width = per_head.shape[1]
    kept = [head * full_head_width + top_indices(per_head[head], head_width) for head in range(num_heads)]
    return torch.cat(kept)


def ff_indices(ff: nn.Module, width: int) -> torch.Tensor:
    importance = _row_norms([lin.weight for lin in _ff_in(ff)]) + _column_norms([ff.wo.weight])
    return top_indices(importance, width)


def _copy(target: torch.Tensor, source: torch.Tensor) -> None:
    target.copy_(source.to(target.dtype))


@torch.no_grad()
def prune_into(side: SideStack, stack: nn.Module, shape: SideShape, kept: torch.Tensor,
               memory_kept: torch.Tensor | None) -> None:
    """Copies the pruned weights of backbone `stack` into `side`; `kept` are this stack's
    residual dimensions, `memory_kept` the encoder's (for cross-attention k and v)."""
    selection = torch.zeros_like(side.down_projections[0].weight)
    selection[torch.arange(shape.width), kept] = 1.0
    for down in side.down_projections:
        down.weight.copy_(selection)
    _copy(side.relative_attention_bias.weight,
          stack.block[0].layer[0].SelfAttention.relative_attention_bias.weight)
    _copy(side.final_norm.weight, stack.final_layer_norm.weight[kept])
    for side_layer, block in zip(side.layers, stack.block):
        attentions = [(side_layer.self_attention, block.layer[0].SelfAttention, kept, side_layer.self_norm,
                       block.layer[0].layer_norm)]
        if side_layer.has_cross:
            attentions.append((side_layer.cross_attention, block.layer[1].EncDecAttention, memory_kept,
                               side_layer.cross_norm, block.layer[1].layer_norm))
        for side_attention, attention, kv_kept, side_norm, norm in attentions:
            inner = head_indices(attention, shape.num_heads, shape.head_width)
            _copy(side_attention.q.weight, attention.q.weight[inner][:, kept])
            _copy(side_attention.k.weight, attention.k.weight[inner][:, kv_kept])
            _copy(side_attention.v.weight, attention.v.weight[inner][:, kv_kept])
            _copy(side_attention.o.weight, attention.o.weight[kept][:, inner])
            _copy(side_norm.weight, norm.weight[kept])
        ff_layer = block.layer[-1]
        ff, side_ff = ff_layer.DenseReluDense, side_layer.feed_forward
        units = ff_indices(ff, shape.ff_width)
        for side_in, backbone_in in zip(
                [side_ff.wi_0, side_ff.wi_1] if shape.gated else [side_ff.wi], _ff_in(ff)):
            _copy(side_in.weight, backbone_in.weight[units][:, kept])
        _copy(side_ff.wo.weight, ff.wo.weight[kept][:, units])
        _copy(side_layer.ff_norm.weight, ff_layer.layer_norm.weight[kept])


# ---------------------------------------------------------------------------- the model

class LadderSideModel(nn.Module):
    """A frozen T5 backbone plus a trainable side encoder, side decoder and up-projection."""

    def __init__(self, backbone: PreTrainedModel, options: LstOptions):
        super().__init__()
        require_t5(backbone.config, "lst")
        self.options = options
        config = backbone.config
        shape = side_shape(config, options)
        self.backbone = backbone
        freeze(self.backbone)
        self.backbone.eval()
        parameter = next(backbone.parameters())
        # Pruning overwrites every weight but the fusion modules, so the initialisation seed
        # only matters for the attention fusion.
        with initialisation_rng(options.seed):
            self.side_encoder = SideStack(shape, config.num_layers, options.fusion, causal=False)
            self.side_decoder = SideStack(shape, config.num_decoder_layers, options.fusion, causal=True,
                                          memory_width=shape.width)
            self.up_projection = nn.Linear(shape.width, config.d_model, bias=False)
        self.side_encoder.to(parameter.device)
        self.side_decoder.to(parameter.device)
        self.up_projection.to(parameter.device)

        encoder_kept = residual_indices(backbone.get_encoder(), shape.width)
        decoder_kept = residual_indices(backbone.get_decoder(), shape.width)
        prune_into(self.side_encoder, backbone.get_encoder(), shape, encoder_kept, None)
        prune_into(self.side_decoder, backbone.get_decoder(), shape, decoder_kept, encoder_kept)
        with torch.no_grad():
            self.up_projection.weight.copy_(self.side_decoder.down_projections[0].weight.t())
        self.register_buffer("encoder_kept", encoder_kept, persistent=False)
        self.register_buffer("decoder_kept", decoder_kept, persistent=False)

    @property
    def config(self) -> PretrainedConfig:
        return self.backbone.config

    def train(self, mode: bool = True) -> "LadderSideModel":
        super().train(mode)
        self.backbone.eval()   # frozen feature extractor: no dropout in its states
        return self

    def gradient_checkpointing_enable(self, **_: Any) -> None:
        """Recomputes side layers in backward (the backbone keeps no graph to checkpoint)."""
        self.side_encoder.gradient_checkpointing = self.side_decoder.gradient_checkpointing = True

    # -- pieces

    def backbone_encoder_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        with torch.no_grad():
            return self.backbone.get_encoder()(input_ids=input_ids, attention_mask=attention_mask,
                                               output_hidden_states=True).hidden_states

    def backbone_decoder_states(self, decoder_input_ids: torch.Tensor, encoder_output: torch.Tensor,
                                attention_mask: torch.Tensor):
        with torch.no_grad():
            return self.backbone.get_decoder()(
                input_ids=decoder_input_ids, encoder_hidden_states=encoder_output,
                encoder_attention_mask=attention_mask, output_hidden_states=True, use_cache=False,
            ).hidden_states

    def logits(self, side_output: torch.Tensor) -> torch.Tensor:
        head = self.backbone.get_output_embeddings()
        hidden = self.up_projection(side_output).to(head.weight.dtype)
        if getattr(self.config, "scale_decoder_outputs", True):   # T5 scales before a tied head
            hidden = hidden * self.config.d_model ** -0.5
        return head(hidden)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder inputs from labels, as T5 does: start token first, -100 becomes pad."""
        shifted = labels.new_full(labels.shape, self.config.decoder_start_token_id)
        shifted[:, 1:] = labels[:, :-1]
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(backbone encoder output, side encoder output)."""
        states = self.backbone_encoder_states(input_ids, attention_mask)
        return states[-1], self.side_encoder(states, attention_mask)

    def decode(self, decoder_input_ids: torch.Tensor, encoded, attention_mask: torch.Tensor) -> torch.Tensor:
        backbone_output, side_memory = encoded
        states = self.backbone_decoder_states(decoder_input_ids, backbone_output, attention_mask)
        keep = torch.ones_like(decoder_input_ids)
        side_output = self.side_decoder(states, keep, memory=side_memory, memory_keep=attention_mask)
        return self.logits(side_output)

    # -- the method interface

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, decoder_input_ids: torch.Tensor | None = None) -> Seq2SeqLMOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("LadderSideModel.forward needs labels or decoder_input_ids")
            decoder_input_ids = self.shift_right(labels)
        logits = self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                               labels.reshape(-1), ignore_index=-100)
        return Seq2SeqLMOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int = 20, num_beams: int = 1, do_sample: bool = False) -> torch.Tensor:
        """Greedy decoding; ids start with the decoder start token, finished rows pad with pad.
        Both decoders keep caches (the backbone's transformers cache, the side decoder's
        SideDecoderCache), so each step runs one position through them."""
        if num_beams != 1 or do_sample:
            raise NotImplementedError("LadderSideModel.generate does greedy decoding only "
                                      f"(num_beams=1, do_sample=False); got num_beams={num_beams}, "
                                      f"do_sample={do_sample}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        eos = self.config.eos_token_id
        eos_ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos], device=input_ids.device)
        backbone_output, side_memory = self.encode(input_ids, attention_mask)
        side_cache = self.side_decoder.start_cache(side_memory, attention_mask)
        backbone_cache = None    # the backbone decoder makes its cache on the first call
        generated = input_ids.new_full((input_ids.shape[0], 1), self.config.decoder_start_token_id)
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            step = self.backbone.get_decoder()(
                input_ids=generated[:, -1:], encoder_hidden_states=backbone_output,
                encoder_attention_mask=attention_mask, past_key_values=backbone_cache, use_cache=True,
                output_hidden_states=True)
            backbone_cache = step.past_key_values
            side_output = self.side_decoder.step(step.hidden_states, side_cache)
            next_ids = self.logits(side_output)[:, -1].argmax(-1)
            next_ids = next_ids.masked_fill(finished, self.config.pad_token_id)
            generated = torch.cat([generated, next_ids[:, None]], dim=1)
            finished |= torch.isin(next_ids, eos_ids)
            if finished.all():
                break
        return generated


def build(model: PreTrainedModel, options: LstOptions) -> nn.Module:
    return LadderSideModel(model, options)


SPEC = MethodSpec(
    name="lst",
    build=build,
    closed_form_counts=closed_form_counts,
)
