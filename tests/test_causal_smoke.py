"""The whole DAG on a decoder-only backbone: with `pretrain.family: gpt_neo` the real stages run
in-process on the tiny configuration (tests/fixtures/params-tiny.yaml) — a tiny GPT-Neo is
pretrained on the embedded world's corpus, then four methods are tuned, trained and evaluated
on it, and the report renders their results. Every file is read back through the contract."""
from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open

from cfqa.config import PROJECT_ROOT, load
from cfqa.contract import read_lr_selection, read_metrics, read_train_record
from cfqa.contract.files import read_data_stats
from cfqa.dag import LR_SELECTION, RUN_MODEL, RUN_RESULTS
from cfqa.model_family import ModelFamily, family_of
from stage_results import run_stages, stage, tiny_params, working_directory

PROJECT_PARAMS = PROJECT_ROOT / "params.yaml"
METHODS = ("full", "last_layer", "lora", "prompt")
SEED = 0


def causal_params() -> dict:
    params = tiny_params(METHODS)
    params["pretrain"].update(family="gpt_neo", vocab_size=300)   # byte-level BPE: 256 bytes + eos + pad first
    params["seeds"] = [SEED]
    params["train"].update(max_steps=8, eval_every=4)
    params["methods"]["lora"]["options"]["target_modules"] = ["q_proj", "v_proj"]   # GPT-Neo's attention
    params["methods"]["prompt"]["options"]["num_virtual_tokens"] = 4
    params["tune"].update(lr_factors=[1.0], max_steps=2)
    params["tracking"]["experiment"] = "cfqa-causal-smoke"
    return params


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("causal-smoke")
    run = run_stages(root, values=causal_params())
    with working_directory(root):
        stage("report", run.params, "--results", "results", "--data-stats", "data/stats.json", "--out", "reports",
              "--summary", "results/summary.json")
    return root


@pytest.mark.slow
def test_pretrain_builds_a_causal_base_and_its_lm_adapted_copy(causal_run):
    from transformers import AutoConfig

    cfg = load([causal_run / "params.yaml"])
    base, lm = causal_run / "models/base", causal_run / "models/base_lm"
    config = AutoConfig.from_pretrained(base)
    assert family_of(config) is ModelFamily.CAUSAL and config.model_type == "gpt_neo"
    assert config.vocab_size == cfg.pretrain.vocab_size
    # The LM-adapted backbone of a causal LM is the same model, byte for byte.
    assert sorted(p.name for p in base.iterdir()) == sorted(p.name for p in lm.iterdir())
    assert all((base / p.name).read_bytes() == p.read_bytes() for p in lm.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_evaluates_on_the_causal_backbone(causal_run, method):
    cfg = load([causal_run / "params.yaml"])
    results = causal_run / RUN_RESULTS.format(method=method, seed=SEED)
    train = read_train_record(results / "train.json", method, SEED)
    assert train.steps == cfg.train.max_steps and train.lr_selected
    assert 0 < train.params.trainable <= train.params.total
    if method == "full":
        assert train.params.trainable == train.params.total
    else:
        assert train.params.trainable < train.params.total
    assert read_lr_selection(causal_run / LR_SELECTION.format(method=method), method).chosen_lr == train.lr

    metrics = read_metrics(results / "metrics.json", method, SEED)
    stats = read_data_stats(causal_run / "data/stats.json")
    for set_name in ("test", "seen"):
        for variant, scores in metrics.sets[set_name].items():
            assert scores.n == stats.counts[set_name][variant]
            for value in (scores.contextual_em_pct, scores.contextual_rouge1_pct, scores.contextual_rouge_l_pct):
                assert value is not None and 0.0 <= value <= 100.0
            assert scores.contextual_rouge1_pct >= scores.contextual_em_pct   # an exact match is ROUGE-1 1

    with safe_open(str(causal_run / RUN_MODEL.format(method=method, seed=SEED) / "trainable.safetensors"),
                   "pt") as weights:
        names = list(weights.keys())
    if method == "lora":
        assert names and all("q_proj" in n or "v_proj" in n for n in names)
    if method == "last_layer":
        assert any(f"h.{cfg.pretrain.num_layers - 1}." in n for n in names)


@pytest.mark.slow
def test_the_report_renders_the_causal_runs(causal_run):
    report = (causal_run / "reports/report.md").read_text(encoding="utf-8")
    pretrain = load([causal_run / "params.yaml"]).pretrain
    assert pretrain.num_layers == 1
    base_model = next(line for line in report.splitlines() if line.startswith("- base model:"))
    assert base_model == ("- base model: GPT-Neo (decoder-only) pretrained here with next-token prediction "
                          f"(d_model {pretrain.d_model}, 1 layer, {pretrain.steps} steps)")
    for method in METHODS:
        assert method in report
    assert (causal_run / "reports/index.html").stat().st_size > 0


def test_a_causal_hub_model_is_saved_as_a_causal_lm_padded_with_eos(tmp_path):
    """pretrain.hub_id takes any save_pretrained directory as well as a hub id: a GPT-style
    checkpoint (tokenizer without a pad token) is loaded as a causal LM and saved with pad = eos;
    a family that does not match the checkpoint's config stops the stage."""
    import dataclasses

    from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoConfig, GPTNeoForCausalLM
    from transformers import PreTrainedTokenizerFast

    from cfqa.config import ConfigError
    from cfqa.pretraining.causal_tokenizer import EOS, train_bpe_tokenizer
    from cfqa.stages.pretrain import save_hub_models

    trained = train_bpe_tokenizer(["the capital of france is paris", "asia is a continent"], 270)
    hub = tmp_path / "hub"
    PreTrainedTokenizerFast(tokenizer_object=trained.backend_tokenizer, eos_token=EOS).save_pretrained(hub)
    GPTNeoForCausalLM(GPTNeoConfig(vocab_size=len(trained), max_position_embeddings=32, hidden_size=16,
                                   num_layers=1, num_heads=2, attention_types=[[["global"], 1]],
                                   intermediate_size=32)).save_pretrained(hub)
    cfg = dataclasses.replace(load([PROJECT_PARAMS]).pretrain, family="gpt_neo", hub_id=str(hub))
    save_hub_models(cfg, tmp_path / "base", tmp_path / "base_lm")
    for directory in (tmp_path / "base", tmp_path / "base_lm"):
        assert type(AutoModelForCausalLM.from_pretrained(directory)).__name__ == "GPTNeoForCausalLM"
        tokenizer = AutoTokenizer.from_pretrained(directory)
        assert tokenizer.pad_token == tokenizer.eos_token == EOS

    with pytest.raises(ConfigError, match=r"pretrain\.family: t5 is the seq2seq family, but the hub model .* is a "
                                          r"causal model"):
        save_hub_models(dataclasses.replace(cfg, family="t5"), tmp_path / "t5", tmp_path / "t5_lm")
    assert not (tmp_path / "t5").exists()
