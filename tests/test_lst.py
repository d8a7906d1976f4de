"""Ladder Side Tuning: the backbone gets no gradient and keeps no graph, every fusion trains,
the side network starts from the backbone's pruned weights, generate is greedy decoding."""
from __future__ import annotations

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

from cfqa.config import ConfigError, registry_options
from cfqa.model.measure import SavedActivations
from cfqa.methods.registry import get_method
from cfqa.methods.base import OptionsError, count_parameters
from cfqa.methods.lst_side import FUSIONS
from cfqa.methods.options import LST_FUSIONS
from conftest import tiny_t5, tiny_t5_config

SPEC = get_method("lst")


def make_batch(seed: int = 0, batch: int = 3, source: int = 9, target: int = 5):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, 96, (batch, source), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, source - 3:] = 0          # one padded row
    labels = torch.randint(2, 96, (batch, target), generator=generator)
    labels[1, target - 2:] = -100               # one short target
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def options(**overrides):
    """params.yaml's lst options with `overrides` on top."""
    return registry_options("lst", overrides)


def build(fusion: str = "static", **overrides):
    backbone_overrides = overrides.pop("backbone", {})
    return SPEC.build(tiny_t5(**backbone_overrides), options(**{"fusion": fusion, "dropout": 0.0, **overrides}))


def test_the_options_class_offers_every_fusion():
    assert LST_FUSIONS == FUSIONS


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("feed_forward_proj", ["relu", "gated-gelu"])
def test_counts_match_closed_form(fusion, feed_forward_proj):
    model = build(fusion, backbone={"feed_forward_proj": feed_forward_proj})
    config = tiny_t5_config(feed_forward_proj=feed_forward_proj)
    assert count_parameters(model) == SPEC.closed_form_counts(config, options(fusion=fusion))


def test_backbone_forward_runs_without_grad():
    model = build()
    grad_enabled = []
    for stack in (model.backbone.get_encoder(), model.backbone.get_decoder()):
        stack.register_forward_pre_hook(lambda module, args: grad_enabled.append(torch.is_grad_enabled()))
    model(**make_batch())
    assert grad_enabled == [False, False]


def test_no_gradient_reaches_the_backbone():
    model = build()
    model(**make_batch()).loss.backward()
    backbone = {id(p) for p in model.backbone.parameters()}
    assert all(p.grad is None for p in model.backbone.parameters())
    side = [(name, p) for name, p in model.named_parameters() if id(p) not in backbone]
    assert side and all(p.requires_grad and p.grad is not None for _, p in side)


def test_backbone_keeps_no_graph():
    """Everything saved for backward is saved by the side network: the whole forward saves
    exactly what the side part alone saves given the backbone's states."""
    torch.manual_seed(0)
    model, batch = build(), make_batch()
    with SavedActivations() as whole:
        model(**batch)

    decoder_input_ids = model.shift_right(batch["labels"])
    encoder_states = model.backbone_encoder_states(batch["input_ids"], batch["attention_mask"])
    decoder_states = model.backbone_decoder_states(decoder_input_ids, encoder_states[-1], batch["attention_mask"])
    with SavedActivations() as side_only:
        memory = model.side_encoder(encoder_states, batch["attention_mask"])
        side = model.side_decoder(decoder_states, torch.ones_like(decoder_input_ids), memory,
                                  batch["attention_mask"])
        logits = model.logits(side)
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1))
    assert whole.count == side_only.count > 0
    assert whole.bytes == side_only.bytes

    # The same backbone with trainable weights and grad enabled does keep a graph, which the
    # meter sees: so the equality above is not the meter missing the backbone.
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(True)
    with SavedActivations() as backbone_with_graph:
        model.backbone.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert backbone_with_graph.count > 0 and backbone_with_graph.bytes > 0


@pytest.mark.parametrize("fusion", FUSIONS)
def test_each_fusion_trains(fusion):
    torch.set_num_threads(1)
    model, batch = build(fusion), make_batch(batch=4, source=10)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def planted_backbone():
    """A tiny T5 whose important dimensions are known: encoder residual dims KEPT, in the first
    encoder layer one inner dim per head (HEAD_DIMS) and feed-forward units UNITS, scaled up."""
    model = tiny_t5()
    encoder = model.get_encoder()
    with torch.no_grad():
        for block in encoder.block:
            attention, ff = block.layer[0].SelfAttention, block.layer[-1].DenseReluDense
            for reader in (attention.q, attention.k, attention.v, ff.wi):
                reader.weight[:, KEPT] *= 10
            for writer in (attention.o, ff.wo):
                writer.weight[KEPT, :] *= 10
        first = encoder.block[0]
        for projection in (first.layer[0].SelfAttention.q, first.layer[0].SelfAttention.k,
                           first.layer[0].SelfAttention.v):
            projection.weight[HEAD_DIMS, :] *= 10
        first.layer[-1].DenseReluDense.wi.weight[UNITS, :] *= 10
    return model


# d_model 32, 4 heads of d_kv 8, d_ff 64, r = 8: keep 4 residual dims, 1 dim per head, 8 units.
KEPT = [3, 10, 17, 30]
HEAD_DIMS = [5, 8 + 0, 16 + 7, 24 + 2]
UNITS = [0, 9, 13, 22, 40, 41, 50, 63]


def test_pruning_takes_the_backbones_weights():
    backbone = planted_backbone()
    model = SPEC.build(backbone, options(reduction_factor=8))
    assert model.encoder_kept.tolist() == KEPT

    attention = backbone.get_encoder().block[0].layer[0].SelfAttention
    side_layer = model.side_encoder.layers[0]
    assert torch.equal(side_layer.self_attention.q.weight, attention.q.weight[HEAD_DIMS][:, KEPT])
    assert torch.equal(side_layer.self_attention.v.weight, attention.v.weight[HEAD_DIMS][:, KEPT])
    assert torch.equal(side_layer.self_attention.o.weight, attention.o.weight[KEPT][:, HEAD_DIMS])
    ff = backbone.get_encoder().block[0].layer[-1].DenseReluDense
    assert torch.equal(side_layer.feed_forward.wi.weight, ff.wi.weight[UNITS][:, KEPT])
    assert torch.equal(side_layer.feed_forward.wo.weight, ff.wo.weight[KEPT][:, UNITS])
    assert torch.equal(side_layer.self_norm.weight,
                       backbone.get_encoder().block[0].layer[0].layer_norm.weight[KEPT])
    assert torch.equal(model.side_encoder.relative_attention_bias.weight,
                       attention.relative_attention_bias.weight)
    # The decoder's cross-attention reads the side encoder's stream: its k keeps the KEPT
    # columns, and side head h holds a row of backbone head h.
    cross_k = backbone.get_decoder().block[0].layer[1].EncDecAttention.k.weight[:, KEPT]
    for head, row in enumerate(model.side_decoder.layers[0].cross_attention.k.weight):
        matches = [i for i in range(cross_k.shape[0]) if torch.equal(cross_k[i], row)]
        assert len(matches) == 1 and matches[0] // 8 == head
    # Rungs start as the selection of the kept dims: rung 0 is the pruned embedding.
    states = torch.randn(2, 3, 32)
    assert torch.equal(model.side_encoder.down_projections[0](states), states[..., KEPT])


def greedy_reference(model, batch, max_new_tokens):
    """Greedy decoding through forward(), one step at a time, without early stopping."""
    generated = torch.zeros(batch["input_ids"].shape[0], 1, dtype=torch.long)
    for _ in range(max_new_tokens):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=generated).logits
        generated = torch.cat([generated, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return generated


@pytest.mark.parametrize("fusion", FUSIONS)
def test_generate_is_greedy_and_stops_at_eos(fusion):
    model = build(fusion, backbone={"feed_forward_proj": "gated-gelu"}).eval()
    batch = make_batch()
    reference = greedy_reference(model, batch, max_new_tokens=6)
    assert torch.equal(model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      max_new_tokens=6), reference)
    # Make row 0's second generated token the eos: each row stops at its first eos, then pads.
    eos = model.config.eos_token_id = int(reference[0, 2])
    ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=6)
    assert ids[:, 0].tolist() == [model.config.decoder_start_token_id] * 3
    stops = []
    for row in range(3):
        emitted = (reference[row, 1:] == eos).nonzero()
        stop = int(emitted[0]) + 2 if len(emitted) else reference.shape[1]
        stops.append(stop)
        assert torch.equal(ids[row, :stop], reference[row, :stop])
        assert (ids[row, stop:] == model.config.pad_token_id).all()
    assert stops[0] <= 3 and ids.shape[1] == max(stops)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_side_decoder_steps_give_the_logits_of_the_whole_prefix(fusion):
    """Decoding positions in pieces (two, then one at a time) through the caches gives the
    logits forward() computes over the whole prefix at once."""
    torch.manual_seed(0)
    model = build(fusion).eval()
    with torch.no_grad():    # trained-looking gates: the fusion's inputs matter, not only its init
        for parameter in model.side_decoder.fusions.parameters():
            parameter.normal_(0, 0.5)
    batch = make_batch()
    decoder_input_ids = model.shift_right(batch["labels"])
    with torch.no_grad():
        whole = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      decoder_input_ids=decoder_input_ids).logits
        backbone_output, side_memory = model.encode(batch["input_ids"], batch["attention_mask"])
        cache = model.side_decoder.start_cache(side_memory, batch["attention_mask"])
        pieces, backbone_cache = [], None
        for start, stop in [(0, 2), (2, 3), (3, 4), (4, 5)]:
            states = model.backbone.get_decoder()(
                input_ids=decoder_input_ids[:, start:stop], encoder_hidden_states=backbone_output,
                encoder_attention_mask=batch["attention_mask"], past_key_values=backbone_cache,
                use_cache=True, output_hidden_states=True)
            backbone_cache = states.past_key_values
            pieces.append(model.logits(model.side_decoder.step(states.hidden_states, cache)))
    assert cache.length == 5
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_cached_generation_is_uncached_greedy_decoding_and_runs_one_position_per_step(fusion):
    torch.manual_seed(1)
    model = build(fusion).eval()
    with torch.no_grad():
        for parameter in model.side_decoder.fusions.parameters():
            parameter.normal_(0, 0.5)
    batch = make_batch(seed=1, batch=4, source=12)
    model.config.eos_token_id = 95      # a token the model does not emit first: decode all steps
    reference = greedy_reference(model, batch, max_new_tokens=12)
    lengths = []
    model.backbone.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=12)
    stop = ids.shape[1]
    assert torch.equal(ids, reference[:, :stop])
    assert lengths == [1] * (stop - 1)


def test_only_a_side_decoder_decodes_step_by_step():
    model = build()
    with pytest.raises(ValueError, match="only a side decoder"):
        model.side_encoder.start_cache(torch.zeros(1, 3, 4), torch.ones(1, 3))


def test_gradient_checkpointing_gives_the_same_gradients():
    batch = make_batch()
    gradients = []
    for checkpointing in (False, True):
        model = build("dynamic")
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(**batch).loss.backward()
        gradients.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert gradients[0].keys() == gradients[1].keys()
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, msg=name)


def test_trains_and_generates_under_bf16_autocast():
    model, batch = build("attention", backbone={"feed_forward_proj": "gated-gelu"}), make_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in trainable)
    assert all(p.dtype == torch.float32 for p in trainable)
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=4)
    assert ids.dtype == torch.long and ids.shape[0] == 3 and 2 <= ids.shape[1] <= 5


def test_backbone_stays_in_eval_mode():
    model = build(dropout=0.1)
    model.train()
    assert model.side_encoder.training and not model.backbone.training


def test_rejects_other_architectures():
    bart = BartForConditionalGeneration(BartConfig(
        vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32))
    with pytest.raises(ValueError, match="T5"):
        SPEC.build(bart, options())


def test_rejects_a_reduction_factor_wider_than_the_backbone():
    with pytest.raises(OptionsError, match="exceeds the backbone's d_kv"):
        SPEC.build(tiny_t5(), options(reduction_factor=16))


@pytest.mark.parametrize("overrides, message", [
    ({"fusion": "concat"}, "fusion: method 'lst': expected one of 'static', 'dynamic', 'attention', got 'concat'"),
    ({"reduction_factor": 0}, "reduction_factor: method 'lst': expected an integer >= 1, got 0"),
    ({"width": 4}, "width: method 'lst': unknown option; allowed keys: reduction_factor, fusion, dropout, seed"),
])
def test_rejects_bad_options(overrides, message):
    with pytest.raises(ConfigError) as caught:
        options(**overrides)
    assert message in str(caught.value)
