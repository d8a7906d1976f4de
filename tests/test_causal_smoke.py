"""The whole DAG on a decoder-only backbone: with `pretrain.family: gpt_neo` the real stages run
in-process on the tiny configuration (tests/fixtures/params-tiny.yaml) — a tiny GPT-Neo is
pretrained on the embedded world's corpus, then four methods are tuned, trained and evaluated
on it, and the report renders their results. Every file is read back through the contract.
Beside the T5 runs of the stage_results fixture, the same report sets both families side by side."""
from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open

from cfqa.config import PROJECT_ROOT, load
from cfqa.contract import ResultsError, read_lr_selection, read_metrics, read_train_record
from cfqa.contract.files import read_data_stats
from cfqa.dag import LR_SELECTION, RUN_MODEL, RUN_RESULTS
from cfqa.model.model_family import ModelFamily, family_of
from stage_results import run_stage, run_stages, tiny_params, working_directory

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
    params["tune"].update(lr_factors=[1.0], trials=1, rungs=[0.25])
    params["tracking"]["experiment"] = "cfqa-causal-smoke"
    return params


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("causal-smoke")
    run = run_stages(root, values=causal_params())
    with working_directory(root):
        run_stage("report", run.params)
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
            assert scores["n"] == stats.counts[set_name][variant]
            for value in (scores["contextual_em_pct"], scores["contextual_rouge1_pct"], scores["contextual_rouge_l_pct"]):
                assert value is not None and 0.0 <= value <= 100.0
            assert scores["contextual_rouge1_pct"] >= scores["contextual_em_pct"]   # an exact match is ROUGE-1 1

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


@pytest.mark.slow
def test_every_run_records_its_epoch_times_family_and_target_losses(causal_run):
    for method in METHODS:
        results = causal_run / RUN_RESULTS.format(method=method, seed=SEED)
        metrics = read_metrics(results / "metrics.json", method, SEED)
        assert metrics.family == "gpt_neo"
        for set_name in ("test", "seen"):
            for scores in metrics.sets[set_name].values():
                assert scores["target_loss_nats"] is not None and scores["target_loss_nats"] > 0


def _markdown_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Every `### title` followed by a pipe table, as rows keyed by header."""
    import re

    tables = {}
    for block in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        title, *lines = block.splitlines()
        rows = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
                for line in lines if line.startswith("|")]
        if rows:
            tables[title.strip()] = [dict(zip(rows[0], row)) for row in rows[2:]]
    return tables


@pytest.mark.slow
def test_a_report_sets_the_t5_and_gpt_neo_families_side_by_side(causal_run, stage_results):
    """The T5 runs (stage_results: full and lora) and the GPT-Neo runs of this module in one
    report: a family column, rows by family then method, and each family's methods compared
    with its own full fine-tuning, exactly as when the family is reported alone."""
    import msgspec

    from cfqa.report.aggregate import aggregate
    from cfqa.report.document import build_document
    from cfqa.report.inputs import load_report_results, load_results
    from cfqa.report.render import render_markdown

    t5 = load_results(stage_results.results, stage_results.methods, stage_results.seeds)
    neo = load_results(causal_run / "results", METHODS, (SEED,))
    results = load_report_results(stage_results.results, stage_results.methods, stage_results.seeds,
                                  others=[causal_run / "results"])
    assert [(r.family, r.name) for r in results] == ([("gpt_neo", m) for m in sorted(METHODS)]
                                                     + [("t5", m) for m in sorted(stage_results.methods)])
    agg = aggregate(results)
    for family, alone in (("t5", aggregate(t5)), ("gpt_neo", aggregate(neo))):
        assert alone.comparisons
        for single in alone.comparisons:
            both = agg.comparison(f"{family}/{single.method}", single.set, single.variant, single.metric)
            assert both is not None and agg.reference_of(both.method) == f"{family}/full"
            # The same paired difference and Holm p: the other family's methods are not in its Holm family.
            assert repr((both.difference, both.holm_p)) == repr((single.difference, single.holm_p))
        for key, interval in alone.accuracy.items():
            assert repr(agg.accuracy[(f"{family}/{key[0]}", *key[1:])]) == repr(interval)
    assert len(agg.comparisons) == sum(len(a.comparisons) for a in (aggregate(t5), aggregate(neo)))

    stats = msgspec.to_builtins(read_data_stats(stage_results.data_stats))
    stats.pop("schema_version")
    markdown = render_markdown(build_document(results, agg, stats, {"data source": "`embedded`"}))
    tables = _markdown_tables(markdown)
    accuracy = tables["Accuracy on `test` by method and context variant"]
    assert list(accuracy[0])[:3] == ["family", "method", "variant"]
    order = [(row["family"], row["method"]) for row in accuracy]
    assert order == sorted(order, key=lambda pair: (pair[0], pair[1])) and {f for f, _ in order} == {"gpt_neo", "t5"}
    lora = agg.accuracy[("gpt_neo/lora", "test", "factual", "contextual_em")]
    row = next(r for r in accuracy if (r["family"], r["method"], r["variant"]) == ("gpt_neo", "lora", "factual"))
    assert row["seeds"] == "1" and row["questions"] == f"{lora.n_questions:,}"
    comparison = tables["Each method minus `full` of the same family on `test` (paired by seed and question)"]
    assert sorted({(r["family"], r["method"]) for r in comparison}) == [
        ("gpt_neo", "last_layer"), ("gpt_neo", "lora"), ("gpt_neo", "prompt"), ("t5", "lora")]
    memory = tables["Training memory by part"]
    assert [r["sum / full"] for r in memory if r["method"] == "full"] == ["1.00", "1.00"]
    efficiency = tables["Cost of each method"]
    assert [(r["family"], r["method"]) for r in efficiency] == [(r.family, r.name) for r in results]
    assert "Model families side by side: `gpt_neo`, `t5`." in markdown

    # The same runs twice would be one key twice: refused, naming both directories.
    with pytest.raises(ResultsError, match=r"results/full and .*results/full: both hold method 'full' of family t5"):
        load_report_results(stage_results.results, stage_results.methods, stage_results.seeds,
                            others=[stage_results.results])
    with pytest.raises(ResultsError, match=r"nowhere/results: missing; expected the results directory"):
        load_report_results(stage_results.results, stage_results.methods, stage_results.seeds,
                            others=[causal_run / "nowhere/results"])

    # One family alone keeps the default report's shape: no family column.
    alone = _markdown_tables(render_markdown(build_document(t5, aggregate(t5), stats, {})))
    assert list(alone["Accuracy on `test` by method and context variant"][0])[0] == "method"


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
