"""Tokenization once per (data, tokenizer): what the `tokenize` stage writes and a job loads is
exactly what the job would have tokenized itself (`tokenize_pairs`), for any truncation, both
target formats and both model families; identical tokenizers are tokenized once; a changed
variant file is refused, not silently used."""
from __future__ import annotations

import numpy as np
import orjson
import pytest

from cfqa.formats import VARIANTS
from cfqa.training.batches import text_pairs, tokenize_pairs, variant_rows
from cfqa.training.tokenized import INDEX, StaleTokenization, load_examples, write_tokenized

WORDS = "the capital of country a is city aa in the year 1990 where which what population continent".split()


def write_variants(root, rng) -> None:
    for split in ("train", "validation", "test", "seen"):
        for variant in VARIANTS:
            rows = []
            for i in range(12):
                context = "" if variant == "empty" else " ".join(rng.choice(WORDS, size=int(rng.integers(3, 60))))
                rows.append({"id": f"{split}-{variant}-{i}", "variant": variant, "question": " ".join(rng.choice(WORDS, 6)),
                             "context": context, "contextual_answer": " ".join(rng.choice(WORDS, int(rng.integers(1, 9)))),
                             "parametric_answer": " ".join(rng.choice(WORDS, int(rng.integers(1, 9))))})
            (root / split).mkdir(parents=True, exist_ok=True)
            (root / split / f"{variant}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """A T5 sentencepiece tokenizer (base and base_lm: the same one) and a GPT-style BPE one."""
    from transformers import PreTrainedTokenizerFast

    from cfqa.pretraining.causal_tokenizer import EOS, train_bpe_tokenizer
    from cfqa.pretraining.tokenizer import load_t5_tokenizer, train_sentencepiece

    root = tmp_path_factory.mktemp("tokenizers")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))))
    for name in ("t5", "t5_lm"):
        train_sentencepiece(corpus, root / name, 50, 0)
        load_t5_tokenizer(root / name).save_pretrained(root / name)
    bpe = train_bpe_tokenizer(WORDS, 300)
    PreTrainedTokenizerFast(tokenizer_object=bpe.backend_tokenizer, eos_token=EOS, pad_token="<pad>").save_pretrained(root / "gpt")
    return root


@pytest.mark.parametrize("family", ["t5", "gpt"])
def test_loaded_examples_equal_tokenizing_in_the_job(backbones, tmp_path, family):
    from transformers import AutoTokenizer

    write_variants(tmp_path / "variants", np.random.default_rng(0))
    names = {"t5": ("t5", "t5_lm"), "gpt": ("gpt", "gpt")}[family]
    index = write_tokenized(tmp_path / "variants", {"base": backbones / names[0], "lm_adapted": backbones / names[1]},
                            tmp_path / "tokenized")
    assert index["backbones"]["base"] == index["backbones"]["lm_adapted"]        # one tokenizer, tokenized once
    assert len([p for p in (tmp_path / "tokenized").iterdir() if p.is_dir()]) == 1
    tokenizer = AutoTokenizer.from_pretrained(backbones / names[0])
    for split, mixture in (("train", ("factual", "counterfactual", "empty", "random")), ("test", ("empty", "factual"))):
        rows = variant_rows(tmp_path / "variants", split, mixture)
        for target_format in ("disentangled", "single"):
            for max_input, max_target in ((512, 64), (12, 5), (24, 3)):
                expected = tokenize_pairs(tokenizer, text_pairs(rows, target_format), max_input, max_target)
                loaded, strata = load_examples(tmp_path / "tokenized", "base", tokenizer, tmp_path / "variants", split,
                                               mixture, target_format, max_input, max_target)
                assert [(list(s), list(t)) for s, t in loaded] == [(list(s), list(t)) for s, t in expected]
                assert [VARIANTS[i] for i in strata] == [row["variant"] for row in rows]


def test_a_changed_variant_file_or_another_tokenizer_is_refused(backbones, tmp_path):
    from transformers import AutoTokenizer

    write_variants(tmp_path / "variants", np.random.default_rng(1))
    write_tokenized(tmp_path / "variants", {"base": backbones / "t5"}, tmp_path / "tokenized")
    assert (tmp_path / "tokenized" / INDEX).is_file()
    t5 = AutoTokenizer.from_pretrained(backbones / "t5")
    with pytest.raises(StaleTokenization, match="not tokenized with backbone 'base'"):
        load_examples(tmp_path / "tokenized", "base", AutoTokenizer.from_pretrained(backbones / "gpt"),
                      tmp_path / "variants", "train", ("factual",), "single", 64, 8)
    with (tmp_path / "variants" / "train" / "factual.jsonl").open("a") as handle:
        handle.write("{\"id\": \"new\"}\n")
    with pytest.raises(StaleTokenization, match=r"tokenized from another .*train/factual\.jsonl; rerun `cfqa tokenize`"):
        load_examples(tmp_path / "tokenized", "base", t5, tmp_path / "variants", "train", ("factual",), "single", 64, 8)
