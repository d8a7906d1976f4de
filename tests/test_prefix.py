"""Prefix tuning (Li & Liang) on T5: where the prefixes reach, how they train, and that the
attention wrapper agrees with the plain model's decoding, masking and caching."""
from __future__ import annotations

import pytest
import torch

from cfqa.config import ConfigError, registry_options
from cfqa.methods.base import count_parameters, load_trainable, save_trainable
from cfqa.methods.prefix import SPEC, merge_prefix_mlp
from conftest import tiny_t5


# Row 1 is right-padded: padding and cross-attention masks are exercised in every batch.
INPUT_IDS = torch.tensor([[5, 6, 7, 8, 9, 1], [10, 11, 12, 1, 0, 0]])
ATTENTION_MASK = (INPUT_IDS != 0).long()
LABELS = torch.tensor([[20, 21, 22, 1], [23, 24, 1, -100]])


def build(attention: str = "sdpa", seed: int = 0, **options):
    base = tiny_t5()
    base.set_attn_implementation(attention)
    return SPEC.build(base, registry_options("prefix", {"seed": seed, **options}))


def logits(model, input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, labels=LABELS):
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).logits


def encoder_states(model):
    with torch.no_grad():
        return model.encoder(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK).last_hidden_state


def test_encoder_sees_its_prefix():
    base = encoder_states(tiny_t5())
    assert (encoder_states(build()) - base).abs().max() > 1e-2
    # Without the encoder site the encoder is exactly the base model's.
    torch.testing.assert_close(encoder_states(build(sites=["decoder_self", "decoder_cross"])), base,
                               rtol=0, atol=0)


def test_cross_attention_prefix_alone_changes_the_decoder():
    cross_only = build(sites=["decoder_cross"])
    torch.testing.assert_close(encoder_states(cross_only), encoder_states(tiny_t5()), rtol=0, atol=0)
    assert (logits(cross_only) - logits(tiny_t5())).abs().max() > 1e-2
    # Adding the cross-attention site to encoder and self-attention prefixes changes the output too.
    without_cross = build(sites=["encoder_self", "decoder_self"])
    assert (logits(build()) - logits(without_cross)).abs().max() > 1e-2


@pytest.mark.parametrize("checkpointing", [None, {"use_reentrant": False}, {"use_reentrant": True}])
def test_gradients_reach_only_the_prefix(checkpointing):
    def gradients(checkpointing):
        model = build()
        model.train()
        if checkpointing is not None:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
        model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, labels=LABELS).loss.backward()
        return {name: p.grad for name, p in model.named_parameters()}

    grads = gradients(checkpointing)
    trainable = {name for name in grads if name.startswith("prefix_tuning.")}
    assert len(trainable) == 15  # 3 sites × (matrix, 2 weights, 2 biases)
    for name, grad in grads.items():
        if name in trainable:
            assert grad is not None and grad.abs().sum() > 0, name
        else:
            assert grad is None, name
    if checkpointing is not None:
        reference = gradients(None)
        for name in trainable:
            torch.testing.assert_close(grads[name], reference[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sites", [["encoder_self", "decoder_self", "decoder_cross"], ["decoder_cross"]])
def test_cached_generate_matches_uncached_greedy_decoding(sites):
    model = build(sites=sites)
    generated = model.generate(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, max_new_tokens=6,
                               num_beams=1, do_sample=False, output_logits=True, return_dict_in_generate=True)
    sequences = generated.sequences
    assert sequences.shape[1] == 7
    with torch.no_grad():  # every step recomputed from scratch, no cache
        uncached = model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK,
                         decoder_input_ids=sequences[:, :-1], use_cache=False).logits
    torch.testing.assert_close(torch.stack(generated.logits, dim=1), uncached, rtol=1e-5, atol=1e-5)
    assert torch.equal(uncached.argmax(-1), sequences[:, 1:])


def test_eager_and_sdpa_agree():
    torch.testing.assert_close(logits(build("eager")), logits(build("sdpa")), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_padded_batch_equals_each_example_alone(attention):
    model = build(attention)
    batch = logits(model)
    for row, length in enumerate(ATTENTION_MASK.sum(1).tolist()):
        labels = LABELS[row:row + 1]
        alone = logits(model, INPUT_IDS[row:row + 1, :length], ATTENTION_MASK[row:row + 1, :length], labels)
        kept = labels[0] != -100
        torch.testing.assert_close(batch[row][kept], alone[0][kept], rtol=1e-5, atol=1e-5)


def test_merged_prefix_gives_the_same_outputs(tmp_path):
    model = build()
    before = logits(model)
    merge_prefix_mlp(model)
    torch.testing.assert_close(logits(model), before, rtol=1e-6, atol=1e-6)
    assert count_parameters(model) == SPEC.closed_form_counts(model.config,
                                                              registry_options("prefix", {"reparameterize": False}))
    # The merged keys/values load into a model trained without reparameterization.
    save_trainable(model, tmp_path / "merged.safetensors")
    direct = build(seed=1, reparameterize=False)
    load_trainable(direct, tmp_path / "merged.safetensors")
    torch.testing.assert_close(logits(direct), before, rtol=1e-6, atol=1e-6)


def test_saved_prefix_reproduces_outputs(tmp_path):
    model = build()
    save_trainable(model, tmp_path / "prefix.safetensors")
    fresh = build(seed=1)  # other initial prefixes, same names
    assert (logits(fresh) - logits(model)).abs().max() > 1e-2
    load_trainable(fresh, tmp_path / "prefix.safetensors")
    torch.testing.assert_close(logits(fresh), logits(model), rtol=0, atol=0)


@pytest.mark.parametrize("options", [
    {}, {"reparameterize": False}, {"num_virtual_tokens": 3, "mlp_hidden_size": 5, "sites": ["decoder_cross"]},
])
def test_counts_match_the_closed_form(options):
    typed = registry_options("prefix", options)
    model = SPEC.build(tiny_t5(num_decoder_layers=3), typed)
    assert count_parameters(model) == SPEC.closed_form_counts(model.config, typed)


def test_other_models_keep_their_attention():
    plain = tiny_t5()
    before = logits(plain)
    build()
    assert plain.config._attn_implementation == "sdpa"
    torch.testing.assert_close(logits(plain), before, rtol=0, atol=0)


def test_switching_attention_after_build_is_an_error():
    model = build()
    model.set_attn_implementation("sdpa")
    with pytest.raises(RuntimeError, match="set_attn_implementation"):
        logits(model)


@pytest.mark.parametrize("reparameterize", [True, False])
def test_bf16_autocast_trains(reparameterize):
    model = build(reparameterize=reparameterize)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, labels=LABELS).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.prefix_tuning.parameters())


@pytest.mark.parametrize("options, message", [
    ({"sites": ["encoder_cross"]}, "sites.0: method 'prefix': expected one of 'encoder_self', 'decoder_self', "
                                   "'decoder_cross', got 'encoder_cross'"),
    ({"sites": []}, "sites: method 'prefix': expected a list, each one of 'encoder_self', 'decoder_self', "
                    "'decoder_cross' with at least 1 item(s), got []"),
    ({"num_virtual_tokens": 0}, "num_virtual_tokens: method 'prefix': expected an integer >= 1, got 0"),
    ({"reparameterize": "yes"}, "reparameterize: method 'prefix': expected true or false, got 'yes'"),
    ({"prefix_length": 4}, "prefix_length: method 'prefix': unknown option; allowed keys: num_virtual_tokens, "
                           "reparameterize, mlp_hidden_size, seed, sites"),
])
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ConfigError) as caught:
        registry_options("prefix", options)
    assert message in str(caught.value)


def test_the_registry_folds_the_mlp_for_inference():
    """Evaluation calls the registry's inference hook: for `prefix` it folds the MLP away."""
    model = build()
    before = logits(model)
    SPEC.prepare_for_inference(model)
    torch.testing.assert_close(logits(model), before, rtol=1e-6, atol=1e-6)
    assert count_parameters(model).trainable < count_parameters(build()).trainable
