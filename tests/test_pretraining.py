"""The embedded base models' parts: the sentencepiece tokenizer, span corruption, packing,
prefix-LM examples, the tiny T5 config and the pretraining loop; and the decoder-only path:
byte-level BPE, next-token examples and the tiny GPT-Neo saved as a causal backbone."""
from __future__ import annotations

import gzip
import json
import statistics

import numpy as np
import orjson
import pytest
import torch

from cfqa import config as config_module
from cfqa.training.backbone import load_backbone
from cfqa.config import PretrainConfig
from cfqa.evaluation.generation import generate_texts
from cfqa.formats import MARKERS, UNANSWERABLE, format_input, format_target
from cfqa.model.model_family import ModelFamily
from cfqa.pretraining import loop
from cfqa.pretraining.causal_lm import pack_documents, pretrain_causal_lm, tiny_gpt_neo_config
from cfqa.pretraining.causal_tokenizer import train_bpe_tokenizer
from cfqa.pretraining.model import new_tiny_t5, tiny_t5_config
from cfqa.pretraining.span_corruption import corrupt, random_spans_noise_mask
from cfqa.pretraining.tokenizer import EXTRA_IDS, SPIECE, load_t5_tokenizer, train_sentencepiece
from cfqa.training.batches import collate
from cfqa.world.build import write_world
from cfqa.world.facts import load_countries

VOCAB = 400
UNK_ID = 2


def pretrain_config(**overrides) -> PretrainConfig:
    values = dict(family="t5", hub_id=None, lm_adapted_hub_id=None, seed=0, threads=1, vocab_size=VOCAB, d_model=32,
                  num_layers=1, num_decoder_layers=1, num_heads=4, d_ff=64, max_length=32, batch_size=16,
                  steps=30, lr=0.01, noise_density=0.15, mean_noise_span_length=3.0, lm_adapt_steps=0)
    values.update(overrides)
    return PretrainConfig(**values)


@pytest.fixture(scope="module")
def raw_world(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    write_world(config_module.load([config_module.PROJECT_ROOT / "params.yaml"]).data.embedded, raw)
    return raw


@pytest.fixture(scope="module")
def tokenizer_dir(raw_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    train_sentencepiece(raw_world / "corpus.txt", out, VOCAB, seed=0)
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_t5_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def qa_texts(raw_world):
    """Model inputs and targets built from the world's dev records, as the pipeline does."""
    with gzip.open(raw_world / "dev.jsonl.gz", "rb") as handle:
        records = [orjson.loads(line) for line in handle]
    texts = []
    for record in records:
        tokens = record["document_text"].split(" ")
        annotation = record["annotations"][0]
        long_answer, short = annotation["long_answer"], annotation["short_answers"][0]
        context = " ".join(tokens[long_answer["start_token"] + 1:long_answer["end_token"] - 1])
        answer = " ".join(tokens[short["start_token"]:short["end_token"]])
        texts.append(format_input(record["question_text"], context))
        texts.append(format_target(answer, answer, "disentangled"))
    texts.append(format_target(UNANSWERABLE, "Europe", "disentangled"))
    return texts


def test_tokenizer_has_t5_layout_and_sentinels(tokenizer):
    assert len(tokenizer) == VOCAB + EXTRA_IDS
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, UNK_ID)
    sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(EXTRA_IDS)])
    # T5 numbers sentinels down from the top of the vocabulary.
    assert sentinels == list(range(VOCAB + EXTRA_IDS - 1, VOCAB - 1, -1))


def test_qa_format_round_trips_without_unknown_pieces(tokenizer, qa_texts):
    assert any("?" in t and t.split("?")[0] == t.split("?")[0].lower() for t in qa_texts)
    encoded = tokenizer(qa_texts).input_ids
    for text, ids in zip(qa_texts, encoded):
        assert UNK_ID not in ids, text
        assert ids[-1] == tokenizer.eos_token_id
        # sentencepiece normalizes the newline between the two lines to a space.
        assert tokenizer.decode(ids, skip_special_tokens=True) == text.replace("\n", " ")


def test_format_markers_are_single_pieces_and_digits_spell_one_by_one(tokenizer):
    for marker in MARKERS:
        assert tokenizer.tokenize(marker) == [f"▁{marker}"]
    target = format_target("5", "12", "disentangled")
    assert tokenizer.tokenize(target) == ["▁contextual:", "▁5", "▁parametric:", "▁1", "2"]
    assert tokenizer.tokenize("271,900 people")[:7] == ["▁2", "7", "1", ",", "9", "0", "0"]
    assert tokenizer.decode(tokenizer(target).input_ids, skip_special_tokens=True) == target.replace("\n", " ")


def test_whole_corpus_encodes_without_unknown_pieces(tokenizer, raw_world):
    lines = (raw_world / "corpus.txt").read_text(encoding="utf-8").splitlines()
    for ids in tokenizer(lines + [line.lower() for line in lines], add_special_tokens=False).input_ids:
        assert UNK_ID not in ids


def test_entity_names_split_into_sub_words(tokenizer):
    countries = load_countries().values()
    names = [c.name for c in countries] + [c.capital for c in countries if c.capital]
    pieces = [len(tokenizer(name, add_special_tokens=False).input_ids) for name in names]
    assert sum(count >= 2 for count in pieces) / len(pieces) > 0.95
    assert statistics.median(pieces) >= 4
    assert len(tokenizer("Ouagadougou", add_special_tokens=False).input_ids) >= 4


def test_same_seed_trains_the_same_vocabulary(raw_world, tokenizer_dir, tmp_path):
    train_sentencepiece(raw_world / "corpus.txt", tmp_path, VOCAB, seed=0)
    assert (tmp_path / SPIECE).read_bytes() == (tokenizer_dir / SPIECE).read_bytes()


@pytest.mark.parametrize("offline", [False, True])
def test_the_saved_tokenizer_does_not_depend_on_the_hub_s_offline_mode(tokenizer_dir, tmp_path, monkeypatch, offline):
    """huggingface_hub reads HF_HUB_OFFLINE once, at import: a process that imported it before
    a stage set the variable must still write the same tokenizer files as a fresh one."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    load_t5_tokenizer(tokenizer_dir).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert saved["local_files_only"] is True


@pytest.mark.parametrize("length", [2, 3, 10, 57, 200, 1000])
def test_noise_mask_covers_noise_density_in_spans(length):
    rng = np.random.default_rng(length)
    mask = random_spans_noise_mask(length, 0.15, 3.0, rng)
    expected_noise = min(max(round(length * 0.15), 1), length - 1)
    assert mask.dtype == bool and mask.shape == (length,)
    assert int(mask.sum()) == expected_noise
    spans = int(np.sum(np.diff(np.concatenate([[0], mask.astype(int)])) == 1))
    assert spans == max(round(expected_noise / 3.0), 1)


def test_noise_mask_depends_on_the_generator_only():
    first = random_spans_noise_mask(100, 0.15, 3.0, np.random.default_rng(7))
    again = random_spans_noise_mask(100, 0.15, 3.0, np.random.default_rng(7))
    other = random_spans_noise_mask(100, 0.15, 3.0, np.random.default_rng(8))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def reconstruct(inputs: list[int], targets: list[int], sentinels: list[int]) -> list[int]:
    """Puts each sentinel's target tokens back in its place in the input."""
    filled: dict[int, list[int]] = {}
    for token in targets[:-1]:
        if token in sentinels:
            replaced = filled.setdefault(token, [])
        else:
            replaced.append(token)
    out = []
    for token in inputs[:-1]:
        out.extend(filled[token] if token in sentinels else [token])
    return out


def test_span_corruption_is_consistent_and_recoverable():
    sentinels = list(range(199, 99, -1))
    eos = 1
    rng = np.random.default_rng(0)
    sequence = [int(t) for t in rng.integers(3, 99, size=120)]
    inputs, targets = loop.span_corruption_example(sequence, pretrain_config(), sentinels, eos, rng)
    input_sentinels = [t for t in inputs if t in sentinels]
    target_sentinels = [t for t in targets if t in sentinels]
    assert input_sentinels == target_sentinels == sentinels[:len(input_sentinels)]
    assert len(input_sentinels) == 6  # round(18 noise tokens / mean span 3)
    assert inputs[-1] == eos and targets[-1] == eos
    masked = len(targets) - 1 - len(target_sentinels)
    assert masked == round(120 * 0.15)
    assert reconstruct(inputs, targets, sentinels) == sequence


def test_corrupt_by_hand():
    mask = np.array([False, True, True, False, False, True, False])
    inputs, targets = corrupt([10, 11, 12, 13, 14, 15, 16], mask, [99, 98], eos_id=1)
    assert inputs == [10, 99, 13, 14, 98, 16, 1]
    assert targets == [99, 11, 12, 98, 15, 1]


def test_pack_fills_sequences_in_order_and_cuts_long_sentences():
    sentences = [[5] * 3, [6] * 4, [7] * 2, [8] * 12, [9]]
    packed = loop.pack(sentences, max_length=8)  # at most 7 tokens, room for eos
    assert packed == [[5, 5, 5, 6, 6, 6, 6], [7, 7], [8] * 7, [9]]


def test_prefix_lm_example_splits_a_sequence_in_two():
    rng = np.random.default_rng(3)
    sequence = list(range(10, 30))
    for _ in range(20):
        inputs, targets = loop.prefix_lm_example(sequence, eos_id=1, rng=rng)
        assert inputs[-1] == targets[-1] == 1
        assert inputs[:-1] + targets[:-1] == sequence
        assert len(inputs) >= 2 and len(targets) >= 2


def test_tiny_t5_config_keeps_heads_consistent():
    config = tiny_t5_config(pretrain_config(d_model=48, num_heads=6), vocab_size=500)
    assert (config.d_kv, config.vocab_size, config.dropout_rate) == (8, 500, 0.0)
    with pytest.raises(ValueError, match="d_model \\(50\\) must be divisible by num_heads \\(4\\)"):
        tiny_t5_config(pretrain_config(d_model=50), vocab_size=500)


@pytest.mark.parametrize("objective", ["span_corruption", "prefix_lm"])
def test_pretrain_lowers_the_loss(objective, tokenizer, raw_world):
    torch.set_num_threads(1)
    cfg = pretrain_config()
    lines = (raw_world / "corpus.txt").read_text(encoding="utf-8").splitlines()[:2000]
    sequences = loop.pack(tokenizer(lines, add_special_tokens=False).input_ids, cfg.max_length)
    sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(EXTRA_IDS)])
    eos = tokenizer.eos_token_id
    if objective == "span_corruption":
        def make_example(sequence, rng):
            return loop.span_corruption_example(sequence, cfg, sentinels, eos, rng)
    else:
        def make_example(sequence, rng):
            return loop.prefix_lm_example(sequence, eos, rng)
    torch.manual_seed(0)
    model = new_tiny_t5(cfg, vocab_size=len(tokenizer))
    losses = loop.pretrain(model, sequences, make_example, steps=30, cfg=cfg,
                           pad_id=tokenizer.pad_token_id, desc=objective)
    assert len(losses) == 30 and all(np.isfinite(losses))
    # Measured: 6.35 -> 3.79 (span corruption), 6.67 -> 5.04 (prefix LM).
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    assert not model.training


# ---------------------------------------------------------------------------- decoder-only (GPT-Neo)


def test_pack_documents_ends_every_sentence_with_eos_and_cuts_evenly():
    assert pack_documents([[5, 6], [7], [8, 9, 10]], 3, 0) == [[5, 6, 0], [7, 0, 8], [9, 10, 0]]
    assert pack_documents([[5, 6, 7, 8]], 3, 0) == [[5, 6, 7], [8, 0]]


def test_next_token_example_puts_the_loss_on_every_token():
    batch = collate([loop.next_token_example([5, 6, 7], np.random.default_rng(0))], 1, ModelFamily.CAUSAL)
    assert batch["input_ids"].tolist() == [[5, 6, 7]] and batch["labels"].tolist() == [[5, 6, 7]]


def test_byte_level_vocabulary_below_the_byte_alphabet_is_rejected():
    with pytest.raises(ValueError, match="pretrain.vocab_size 200 is below the byte-level minimum 258"):
        train_bpe_tokenizer(["a b c"], 200)


def test_tiny_gpt_neo_config_attends_globally_with_room_for_prompt_and_answer():
    config = tiny_gpt_neo_config(pretrain_config(num_layers=3), 400, eos_id=0, pad_id=1)
    assert config.attention_layers == ["global"] * 3
    assert config.hidden_size == 32 and config.num_heads == 4 and config.intermediate_size == 64
    assert config.max_position_embeddings >= 96 + 40 and not config.is_encoder_decoder


def test_causal_lm_pretraining_lowers_the_loss_and_saves_a_causal_backbone(raw_world, tmp_path, qa_texts):
    record = pretrain_causal_lm(pretrain_config(steps=40, num_layers=2), raw_world / "corpus.txt", tmp_path)
    assert record["objective"] == "next_token" and record["steps"] == 40
    assert record["final_loss"] < record["first_loss"] - 0.5
    assert orjson.loads((tmp_path / "pretrain.json").read_bytes()) == record
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))

    model, tokenizer = load_backbone(tmp_path)
    assert type(model).__name__ == "GPTNeoForCausalLM"
    assert len(tokenizer) == VOCAB == model.config.vocab_size
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    for text in qa_texts[:20]:
        assert tokenizer.decode(tokenizer(text).input_ids) == text       # byte-level: nothing unknown
    texts = generate_texts(model, tokenizer, qa_texts[:4:2], batch_size=2, max_input_length=96,
                           max_new_tokens=5, num_beams=1, device=torch.device("cpu"), desc="test").texts
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
