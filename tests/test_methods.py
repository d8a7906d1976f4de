"""Every registered fine-tuning method on a tiny T5: closed-form parameter counts, which
weights an optimizer step moves, trainable-only checkpoints, and generation. Options are
params.yaml's for the method, with each case's overrides on top."""
from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

from cfqa.config import registry_options
from cfqa.methods.registry import METHOD_NAMES, get_method
from cfqa.methods.base import OptionsError, count_parameters, load_trainable, save_trainable
from cfqa.training.optimization import seed_everything
from conftest import tiny_t5

GATED = {"feed_forward_proj": "gated-gelu"}
# Encoder and decoder depths differ, so the counts must tell them apart. Not a deeper decoder:
# transformers 5.23 sizes T5's generation cache by the encoder depth, and cached generate()
# then fails with an IndexError when num_decoder_layers > num_layers.
DEEPER_ENCODER = {"num_layers": 3}

CASES = [pytest.param(name, {}, {}, id=name) for name in METHOD_NAMES] + [
    pytest.param("full", {}, GATED, id="full-gated"),
    pytest.param("last_layer", {"num_blocks": 2}, GATED, id="last_layer-2blocks-gated"),
    pytest.param("lora", {"r": 2, "alpha": 4, "target_modules": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"]},
                 GATED, id="lora-all-linear-gated"),
    pytest.param("ia3", {}, {**GATED, **DEEPER_ENCODER}, id="ia3-gated-deeper-encoder"),
    pytest.param("prompt", {"num_virtual_tokens": 3, "seed": 7}, {}, id="prompt-3tokens"),
    pytest.param("prefix_decoder", {"num_virtual_tokens": 3, "reparameterize": True, "mlp_hidden_size": 16},
                 DEEPER_ENCODER, id="prefix_decoder-mlp-deeper-encoder"),
    pytest.param("adapter", {"reduction_factor": 4, "cross_attention": False, "train_layer_norms": False},
                 DEEPER_ENCODER, id="adapter-no-cross-deeper-encoder"),
]

# Methods whose weights start as a no-op, so the built model computes exactly the base model.
IDENTITY_AT_START = ("full", "last_layer", "lora", "ia3", "adapter")

VOCAB = 96   # tiny_t5's vocabulary


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, VOCAB, (2, 7), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, 5:], attention_mask[1, 5:] = 0, 0                  # a padded row
    labels = torch.randint(3, VOCAB, (2, 4), generator=generator)
    labels[:, -1] = 1                                                # eos
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def build(name: str, options: dict, overrides: dict):
    spec = get_method(name)
    base = tiny_t5(**overrides)
    return spec, base.config, spec.build(base, registry_options(name, options))


def logits(model) -> torch.Tensor:
    model.eval()   # inference: a method's new modules may come out of build() in training mode
    with torch.no_grad():
        return model(**batch()).logits


def generate(model) -> torch.Tensor:
    inputs = batch()
    model.eval()
    with torch.no_grad():
        return model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                              max_new_tokens=8, num_beams=1)


def train_steps(model, steps: int = 2) -> None:
    """AdamW steps over the trainable parameters, as training does.

    Two steps, because a zero-initialised factor (LoRA's B, an adapter's up-projection)
    makes its partner's first gradient exactly zero; the first step moves the factor, the
    second reaches the partner. No weight decay: decay alone would move every trainable
    tensor and make "it changed" say nothing about gradients reaching it.
    """
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        model(**batch()).loss.backward()
        leaked = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
        assert not leaked, f"frozen parameters received gradients: {leaked[:5]}"
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.mark.parametrize("name, options, overrides", CASES)
def test_counts_match_closed_form(name, options, overrides):
    spec, config, model = build(name, options, overrides)
    counts = count_parameters(model)
    assert counts == spec.closed_form_counts(config, registry_options(name, options))
    assert 0 < counts.trainable <= counts.total


@pytest.mark.parametrize("name, options, overrides", CASES)
def test_step_moves_exactly_the_trainable_weights(name, options, overrides):
    _, _, model = build(name, options, overrides)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model)
    after = dict(model.named_parameters())
    frozen_moved = [n for n, p in after.items() if not p.requires_grad and not torch.equal(p, before[n])]
    trainable_still = [n for n, p in after.items() if p.requires_grad and torch.equal(p, before[n])]
    assert not frozen_moved, f"frozen tensors changed: {frozen_moved[:5]}"
    assert not trainable_still, f"trainable tensors did not change: {trainable_still[:5]}"


@pytest.mark.parametrize("name, options, overrides", CASES)
def test_trainable_checkpoint_restores_the_model(name, options, overrides, tmp_path):
    spec, _, trained = build(name, options, overrides)
    train_steps(trained)
    path = tmp_path / "trainable.safetensors"
    save_trainable(trained, path)

    stored = load_file(str(path))
    trainable_names = {n for n, p in trained.named_parameters() if p.requires_grad}
    assert set(stored) == trainable_names
    assert sum(t.numel() for t in stored.values()) == count_parameters(trained).trainable

    fresh = spec.build(tiny_t5(**overrides), registry_options(name, options))   # same base weights (seeded)
    assert not torch.equal(logits(fresh), logits(trained))   # so the load below has work to do
    load_trainable(fresh, path)
    assert torch.equal(logits(fresh), logits(trained))
    assert torch.equal(generate(fresh), generate(trained))


@pytest.mark.parametrize("name, options, overrides", CASES)
def test_generate_returns_token_ids(name, options, overrides):
    _, _, model = build(name, options, overrides)
    ids = generate(model)
    assert ids.dtype == torch.long
    assert ids.shape[0] == 2 and 2 <= ids.shape[1] <= 1 + 8     # decoder start + at most 8 new
    assert int(ids.min()) >= 0 and int(ids.max()) < VOCAB


@pytest.mark.parametrize("name", IDENTITY_AT_START)
def test_method_starts_as_the_base_model(name):
    base_logits = logits(tiny_t5())
    _, _, model = build(name, {}, {})
    assert torch.equal(logits(model), base_logits)


def test_last_layer_trains_an_untied_head_and_leaves_embeddings_frozen():
    _, _, model = build("last_layer", {}, {})
    assert model.lm_head.weight is not model.shared.weight
    assert model.lm_head.weight.requires_grad and not model.shared.weight.requires_grad
    assert torch.equal(model.lm_head.weight, model.shared.weight)      # a copy to start from
    trainable_blocks = {n.split(".")[1] for n, p in model.decoder.named_parameters()
                        if p.requires_grad and n.startswith("block.")}
    assert trainable_blocks == {"1"}                                    # only the top block
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_prompt_starts_from_seeded_vocabulary_embeddings():
    def prompt(seed):
        model = build("prompt", {"num_virtual_tokens": 5, "seed": seed}, {})[2]
        return model.prompt_encoder["default"].embedding.weight.detach(), model.word_embeddings.weight

    first, vocabulary = prompt(3)
    again, _ = prompt(3)
    other, _ = prompt(4)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert all(any(torch.equal(row, word) for word in vocabulary) for row in first)


@pytest.mark.parametrize("name, options", [("prompt", {}), ("prefix", {}), ("lst", {"fusion": "attention"})])
def test_a_methods_own_initialisation_follows_the_run_seed_unless_an_option_fixes_it(name, options):
    def initial(run_seed: int, option_seed: int | None) -> dict[str, torch.Tensor]:
        base = tiny_t5()                   # the same backbone every time (it seeds the RNG itself)
        seed_everything(run_seed)          # what cfqa.training.backbone.build_method_model does with the run seed
        model = get_method(name).build(base, registry_options(name, {**options, "seed": option_seed}))
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[n], b[n]) for n in a)

    # params.yaml leaves the seed to the run: another run seed, another initialisation.
    assert registry_options(name).seed is None
    assert same(initial(0, None), initial(0, None))
    assert not same(initial(0, None), initial(1, None))
    # A fixed option seed gives every run seed the same initialisation.
    assert same(initial(0, 5), initial(1, 5))


def test_adapter_hooks_follow_a_deep_copy():
    _, _, model = build("adapter", {}, {})
    original = logits(model)
    duplicate = copy.deepcopy(model)
    with torch.no_grad():
        duplicate.encoder.block[0].layer[0].adapter.up.bias.fill_(1.0)
    assert not torch.equal(logits(duplicate), original)
    assert torch.equal(logits(model), original)


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                      bos_token_id=1, eos_token_id=1, pad_token_id=0)).eval()


def test_peft_methods_pick_the_causal_task_for_decoder_only_models():
    model = get_method("lora").build(tiny_gpt2(), registry_options("lora", {"target_modules": ["c_attn"]}))
    assert model.peft_config["default"].task_type == "CAUSAL_LM"
    ids = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(0))
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 8)


@pytest.mark.parametrize("name", ["last_layer", "adapter"])
def test_t5_layout_methods_refuse_other_architectures(name):
    with pytest.raises(ValueError, match="T5"):
        get_method(name).build(tiny_gpt2(), registry_options(name))


# Options that are valid on their own but do not fit the model (tests/test_method_options.py
# covers options that are wrong whatever the model).
@pytest.mark.parametrize("name, options, overrides, error, message", [
    ("last_layer", {"num_blocks": 3}, {}, OptionsError, "num_blocks 3 exceeds the decoder's 2 layers"),
    ("adapter", {"reduction_factor": 64}, {}, OptionsError, "reduction_factor 64 exceeds d_model=32"),
    ("lora", {"target_modules": ["wi"]}, GATED, ValueError, r"\['wi'\] are not linear layers"),
])
def test_options_that_do_not_fit_the_model_are_rejected(name, options, overrides, error, message):
    with pytest.raises(error, match=message):
        build(name, options, overrides)


def test_trainable_checkpoint_bytes_do_not_depend_on_the_process(tmp_path):
    """safetensors writes its metadata map in a per-process random hash order; the same weights
    and metadata must still give the same file bytes, or the image test and DVC see a change."""
    model = tiny_t5()
    metadata = {"method": "full", "seed": "0", "backbone": "base", "mixture": "f+cf"}
    digests = set()
    for i in range(8):
        path = tmp_path / f"{i}.safetensors"
        save_trainable(model, path, metadata=metadata)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as handle:
        assert json.loads(handle.metadata()["cfqa"]) == metadata
