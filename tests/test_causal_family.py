"""The decoder-only (causal) model family on a tiny GPT-Neo: batches that put the loss on the
answer only, left-padded generation that returns only the new tokens, and the fine-tuning
methods placed by the per-architecture table (closed-form counts, frozen weights untouched)."""
from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from cfqa.config import registry_options
from cfqa.evaluation.generation import generate_texts
from cfqa.methods.registry import get_method
from cfqa.methods.base import OptionsError, count_parameters, load_trainable, save_trainable
from cfqa.methods.families import UnsupportedFamily
from cfqa.model.model_family import ModelFamily, family_of, model_family
from cfqa.pretraining.causal_tokenizer import train_bpe_tokenizer
from cfqa.training.batches import collate, padding_share, tokenize_pairs
from conftest import tiny_t5

LINES = ["Paris is the capital of France.", "Berlin is the capital of Germany.",
         "Lima is the capital of Peru.", "The currency of Japan is the yen.",
         "question: what is the capital of France?", "contextual: Paris", "parametric: Berlin"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(LINES, vocab_size=300)


def tiny_gpt_neo_config(vocab_size: int = 300, **overrides) -> GPTNeoConfig:
    # hidden_size / num_heads = 8: GPT-Neo's head width is always hidden_size // num_heads.
    # window_size covers every position: GPT-Neo's local layers slide their window over cache
    # slots, so left padding inside the window would change what a padded row sees.
    values = dict(vocab_size=vocab_size, max_position_embeddings=128, hidden_size=32, num_layers=2, num_heads=4,
                  attention_types=[[["global", "local"], 1]], window_size=128, intermediate_size=64,
                  embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0,
                  bos_token_id=0, eos_token_id=0, pad_token_id=1)
    values.update(overrides)
    return GPTNeoConfig(**values)


def tiny_gpt_neo(seed: int = 0, **overrides) -> GPTNeoForCausalLM:
    torch.manual_seed(seed)
    return GPTNeoForCausalLM(tiny_gpt_neo_config(**overrides)).eval()


# ---------------------------------------------------------------------------- family

def test_family_comes_from_the_config():
    assert family_of(tiny_gpt_neo_config()) is ModelFamily.CAUSAL
    assert model_family(tiny_gpt_neo()) is ModelFamily.CAUSAL
    assert model_family(tiny_t5()) is ModelFamily.SEQ2SEQ


# ---------------------------------------------------------------------------- batches

def test_targets_end_with_eos_for_a_gpt_tokenizer(tokenizer):
    (source, target), = tokenize_pairs(tokenizer, [("question: where?", "contextual: Paris")], 64, 64)
    assert tokenizer.eos_token_id not in source
    assert target[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(target, skip_special_tokens=True) == "contextual: Paris"
    (_, cut), = tokenize_pairs(tokenizer, [("q", "contextual: Paris is a long answer")], 64, 4)
    assert len(cut) == 4 and cut[-1] == tokenizer.eos_token_id


def test_causal_batch_is_prompt_plus_answer_with_the_loss_on_the_answer_only():
    pad = 1
    batch = collate([([5, 6, 7], [8, 9, 0]), ([10], [11, 0])], pad, ModelFamily.CAUSAL)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0], [10, 11, 0, pad, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 8, 9, 0], [-100, 11, 0, -100, -100, -100]]
    assert padding_share(batch, pad, ModelFamily.CAUSAL) == (9, 12)


def test_causal_batch_mask_comes_from_lengths_when_pad_is_eos():
    batch = collate([([5], [0]), ([5, 6], [7, 0])], 0, ModelFamily.CAUSAL)   # pad id == eos id
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 0, -100, -100], [-100, -100, 7, 0]]


def test_causal_loss_is_the_mean_answer_token_loss():
    model = tiny_gpt_neo()
    batch = collate([([5, 6, 7, 12], [8, 9, 0]), ([10, 13], [11, 0])], 1, ModelFamily.CAUSAL)
    with torch.no_grad():
        output = model(**batch)
    log_probs = torch.log_softmax(output.logits.float(), -1)
    # position t predicts token t + 1: the answer tokens' log-probabilities by hand
    picked = [-log_probs[row, position - 1, token]
              for row, (prompt, answer) in enumerate([([5, 6, 7, 12], [8, 9, 0]), ([10, 13], [11, 0])])
              for position, token in enumerate(answer, start=len(prompt))]
    assert len(picked) == 5                  # 3 + 2 answer tokens; no prompt or padding position
    assert torch.allclose(output.loss, torch.stack(picked).mean(), atol=1e-6)


def test_seq2seq_batches_are_unchanged_by_default():
    batch = collate([([5, 6, 1], [8, 1]), ([7, 1], [9, 10, 1])], 0)
    assert batch["input_ids"].tolist() == [[5, 6, 1], [7, 1, 0]]
    assert batch["labels"].tolist() == [[8, 1, -100], [9, 10, 1]]


# ---------------------------------------------------------------------------- generation

def generate(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int = 6) -> list[str]:
    return generate_texts(model, tokenizer, prompts, batch_size=batch_size, max_input_length=64,
                          max_new_tokens=max_new_tokens, num_beams=1, device=torch.device("cpu"),
                          desc="test").texts


def greedy_by_hand(model, prompt_ids: list[int], eos: int, max_new_tokens: int) -> list[int]:
    """Greedy decoding without the cache or generate(): the reference for the new tokens."""
    ids, new = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if token == eos:
                break
            ids.append(token)
            new.append(token)
    return new


PROMPTS = ["question: what is the capital of France?", "Lima",
           "question: what is the currency of Japan?\ncontext: The currency of Japan is the yen.",
           "Berlin is the"]


def test_generation_returns_only_the_new_tokens(tokenizer):
    model = tiny_gpt_neo(vocab_size=len(tokenizer))
    texts = generate(model, tokenizer, PROMPTS, batch_size=1)
    for prompt, text in zip(PROMPTS, texts):
        expected = greedy_by_hand(model, tokenizer(prompt).input_ids, tokenizer.eos_token_id, 6)
        assert text == tokenizer.decode(expected, skip_special_tokens=True)
        assert prompt not in text                            # not the prompt followed by the answer


def test_left_padded_batch_generation_equals_one_by_one(tokenizer):
    model = tiny_gpt_neo(seed=3, vocab_size=len(tokenizer))
    one_by_one = generate(model, tokenizer, PROMPTS, batch_size=1, max_new_tokens=8)
    batched = generate(model, tokenizer, PROMPTS, batch_size=len(PROMPTS), max_new_tokens=8)
    assert batched == one_by_one
    assert len(set(one_by_one)) > 1      # the prompts lead to different continuations


def test_generation_stops_at_eos_after_learning_the_answers(tokenizer):
    """Fine-tuned on two prompt -> answer pairs, the model answers each and stops at eos."""
    model = tiny_gpt_neo(vocab_size=len(tokenizer))
    pairs = [("question: what is the capital of France?", "contextual: Paris"),
             ("question: what is the capital of Peru?", "contextual: Lima")]
    batch = collate(tokenize_pairs(tokenizer, pairs, 64, 16), tokenizer.pad_token_id, ModelFamily.CAUSAL)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    assert generate(model, tokenizer, [p for p, _ in pairs], batch_size=2, max_new_tokens=12) == \
        [a for _, a in pairs]


# ---------------------------------------------------------------------------- methods

VOCAB, D, F, LAYERS, POSITIONS = 96, 32, 64, 2, 128   # tiny_gpt_neo_config(vocab_size=96)
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"]
# One GPT-Neo block by hand: q, k, v, out_proj (+ bias); c_fc, c_proj (+ biases); ln_1, ln_2.
BLOCK = 4 * D * D + D + (D * F + F) + (F * D + D) + 2 * 2 * D
BASE = VOCAB * D + POSITIONS * D + LAYERS * BLOCK + 2 * D   # tied head; ln_f

# (method, options, trainable parameters by the method's closed form written out here)
METHOD_CASES = [
    pytest.param("full", {}, BASE, id="full"),
    pytest.param("last_layer", {"num_blocks": 1}, BLOCK + 2 * D + VOCAB * D, id="last_layer-1"),
    pytest.param("last_layer", {"num_blocks": 2}, 2 * BLOCK + 2 * D + VOCAB * D, id="last_layer-2"),
    # LoRA: r * (d_in + d_out) per targeted matrix, one matrix of each name per layer
    pytest.param("lora", {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]},
                 LAYERS * 2 * 2 * (D + D), id="lora-qv"),
    pytest.param("lora", {"r": 8, "alpha": 16, "target_modules": ALL_LINEAR},
                 LAYERS * 8 * (4 * (D + D) + (D + F) + (F + D)), id="lora-all-linear"),
    # (IA)3: one scale per output feature of k and v, per input feature of c_proj
    pytest.param("ia3", {"target_modules": ["k_proj", "v_proj", "c_proj"], "feedforward_modules": ["c_proj"]},
                 LAYERS * (D + D + F), id="ia3"),
    pytest.param("prompt", {"num_virtual_tokens": 12, "seed": 7}, 12 * D, id="prompt-12"),
    pytest.param("prefix_decoder", {"num_virtual_tokens": 3, "reparameterize": False},
                 3 * LAYERS * 2 * D, id="prefix_decoder-table"),
    pytest.param("adapter", {"reduction_factor": 4, "train_layer_norms": True},
                 2 * LAYERS * (2 * D * (D // 4) + D // 4 + D) + (2 * LAYERS + 1) * 2 * D, id="adapter"),
]
IDENTITY_AT_START = ("full", "last_layer", "lora", "ia3", "adapter")


def build_on_gpt_neo(name: str, options: dict):
    spec = get_method(name)
    base = tiny_gpt_neo(vocab_size=VOCAB)
    return spec, base.config, spec.build(base, registry_options(name, options))


def causal_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    prompts = torch.randint(2, VOCAB, (2, 6), generator=generator).tolist()
    answers = torch.randint(2, VOCAB, (2, 3), generator=generator).tolist()
    return collate([(prompts[0], answers[0] + [0]), (prompts[1][:4], answers[1] + [0])], 1, ModelFamily.CAUSAL)


def causal_logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**causal_batch()).logits


@pytest.mark.parametrize("name, options, trainable", METHOD_CASES)
def test_gpt_neo_counts_match_the_closed_form(name, options, trainable):
    spec, config, model = build_on_gpt_neo(name, options)
    counts = count_parameters(model)
    assert counts.trainable == trainable
    assert counts == spec.closed_form_counts(config, registry_options(name, options))
    added = 0 if name in ("full", "last_layer") else trainable
    if name == "adapter":
        added -= (2 * LAYERS + 1) * 2 * D     # the layer norms train but are the base model's
    untied_head = VOCAB * D if name == "last_layer" else 0
    assert counts.total == BASE + added + untied_head


def test_the_base_count_is_the_models():
    assert count_parameters(tiny_gpt_neo(vocab_size=VOCAB)).total == BASE


@pytest.mark.parametrize("name, options, trainable", METHOD_CASES)
def test_gpt_neo_training_moves_only_the_trainable_weights(name, options, trainable, tmp_path):
    spec, _, model = build_on_gpt_neo(name, options)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(3):   # a zero-initialised factor reaches its partner from the second step on
        model(**causal_batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = dict(model.named_parameters())
    frozen_moved = [n for n, p in after.items() if not p.requires_grad and not torch.equal(p, before[n])]
    trainable_still = [n for n, p in after.items() if p.requires_grad and torch.equal(p, before[n])]
    assert not frozen_moved, f"frozen tensors changed: {frozen_moved[:5]}"
    assert not trainable_still, f"trainable tensors did not change: {trainable_still[:5]}"

    path = tmp_path / "trainable.safetensors"
    save_trainable(model, path)
    fresh = spec.build(tiny_gpt_neo(vocab_size=VOCAB), registry_options(name, options))
    load_trainable(fresh, path)
    assert torch.equal(causal_logits(fresh), causal_logits(model))


@pytest.mark.parametrize("name", IDENTITY_AT_START)
def test_gpt_neo_method_starts_as_the_base_model(name):
    options = next(p.values[1] for p in METHOD_CASES if p.values[0] == name)
    assert torch.equal(causal_logits(build_on_gpt_neo(name, options)[2]), causal_logits(tiny_gpt_neo(vocab_size=VOCAB)))


def test_last_layer_trains_the_top_block_final_norm_and_an_untied_head():
    _, _, model = build_on_gpt_neo("last_layer", {"num_blocks": 1})
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert model.lm_head.weight.requires_grad and not model.transformer.wte.weight.requires_grad
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.split(".")[2] for n in trainable if n.startswith("transformer.h.")} == {"1"}
    assert {"transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"} <= trainable


@pytest.mark.parametrize("name, options, trainable", METHOD_CASES[3:])
def test_gpt_neo_methods_generate_the_same_batched_as_one_by_one(name, options, trainable, tokenizer):
    spec = get_method(name)
    base = tiny_gpt_neo(seed=3, vocab_size=len(tokenizer))
    model = spec.build(base, registry_options(name, options)).eval()
    one_by_one = generate(model, tokenizer, PROMPTS, batch_size=1)
    assert generate(model, tokenizer, PROMPTS, batch_size=len(PROMPTS)) == one_by_one
    assert not any(prompt in text for prompt, text in zip(PROMPTS, one_by_one))


@pytest.mark.parametrize("name", ["prefix", "lst"])
def test_seq2seq_only_methods_refuse_a_causal_model_naming_method_and_family(name):
    with pytest.raises(UnsupportedFamily, match=rf"method '{name}' cannot be applied to a causal model"):
        get_method(name).build(tiny_gpt_neo(vocab_size=VOCAB), registry_options(name))
    with pytest.raises(UnsupportedFamily, match=rf"method '{name}'.*causal"):
        get_method(name).closed_form_counts(tiny_gpt_neo_config(vocab_size=VOCAB), registry_options(name))


def test_t5_module_names_are_rejected_on_gpt_neo_with_the_choices():
    with pytest.raises(ValueError, match=r"\['q', 'v'\] are not linear layers of this GPT-Neo; choose from "
                                         r"\['c_fc', 'c_proj', 'k_proj', 'out_proj', 'q_proj', 'v_proj'\]"):
        build_on_gpt_neo("lora", {"target_modules": ["q", "v"]})


def test_last_layer_num_blocks_beyond_the_depth_is_rejected():
    with pytest.raises(OptionsError, match="num_blocks 3 exceeds the model's 2 layers"):
        build_on_gpt_neo("last_layer", {"num_blocks": 3})


# ---------------------------------------------------------------------------- loading

def test_a_gpt_tokenizer_without_pad_loads_with_eos_as_pad(tokenizer, tmp_path):
    from transformers import PreTrainedTokenizerFast
    from cfqa.training.backbone import load_backbone

    no_pad = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|endoftext|>")
    assert no_pad.pad_token is None
    tiny_gpt_neo(vocab_size=len(tokenizer)).save_pretrained(tmp_path)
    no_pad.save_pretrained(tmp_path)
    model, loaded = load_backbone(tmp_path)
    assert type(model).__name__ == "GPTNeoForCausalLM"
    assert loaded.pad_token_id == loaded.eos_token_id == 0


# ---------------------------------------------------------------------------- the GPT-Neo profile

def test_gpt_neo_profile_methods_build_on_gpt_neo_with_their_closed_form_counts():
    import yaml
    from cfqa.config import PROJECT_ROOT

    profile = PROJECT_ROOT / "workflow/profiles/gpt-neo-125m/params.yaml"
    raw = yaml.safe_load(profile.read_text(encoding="utf-8"))
    assert raw["pretrain"]["family"] == "gpt_neo"
    kept = {name for name, block in raw["methods"].items() if block is not None}
    assert kept == {"last_layer", "lora", "prompt"}
    for name in sorted(kept):
        options = registry_options(name, paths=[PROJECT_ROOT / "params.yaml", profile])
        spec = get_method(name)
        model = spec.build(tiny_gpt_neo(vocab_size=VOCAB), options)
        assert count_parameters(model) == spec.closed_form_counts(model.config, options)
    lora = registry_options("lora", paths=[PROJECT_ROOT / "params.yaml", profile])
    assert lora.r == 8 and set(lora.target_modules) == set(ALL_LINEAR)
