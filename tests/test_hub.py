"""Hub models pinned and offline (cfqa.model.hub, `cfqa fetch`, `cfqa pretrain`'s hub path), against
tiny random T5 and GPT-Neo checkpoints written here in the hub's layout, in both forms
(model.safetensors; pytorch_model.bin only), served by a local stand-in for the hub
(tests/hub_server.py) on 127.0.0.1: fetched once, then loaded with no request reaching it."""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, GPTNeoConfig,
                          GPTNeoForCausalLM, PreTrainedTokenizerFast)

from cfqa.config import PROJECT_ROOT, HubModelPin
from cfqa.model.hub import CONVERSION_RECORD, HubPinError, fetch_model, local_model_dir, pin_of, read_source_record
from conftest import tiny_t5
from hub_server import HubServer
from pipeline_support import tool_env
from test_tokenized import write_variants

OLD, NEW = "1" * 40, "2" * 40          # two commits of each repo; main is NEW, params pin OLD
WEIGHTS = {"safetensors": "model.safetensors", "bin": "pytorch_model.bin"}


def t5_tokenizer_files(tmp: Path) -> dict[str, bytes]:
    from cfqa.pretraining.tokenizer import load_t5_tokenizer, train_sentencepiece

    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(f"the capital of country {c} is city {c}{c} in the year {y}"
                                 for c in "abcdefghijklmnop" for y in range(1990, 1996)))
    train_sentencepiece(corpus, tmp / "t5tok", 60, 0)
    load_t5_tokenizer(tmp / "t5tok").save_pretrained(tmp / "t5tok")
    return {p.name: p.read_bytes() for p in (tmp / "t5tok").iterdir()}


def gpt_tokenizer_files(tmp: Path) -> dict[str, bytes]:
    from cfqa.pretraining.causal_tokenizer import EOS, train_bpe_tokenizer

    trained = train_bpe_tokenizer(["the capital of france is paris", "asia is a continent"], 270)
    PreTrainedTokenizerFast(tokenizer_object=trained.backend_tokenizer, eos_token=EOS).save_pretrained(tmp / "gpttok")
    return {p.name: p.read_bytes() for p in (tmp / "gpttok").iterdir()}


def tiny_gpt_neo(seed: int, vocab: int) -> GPTNeoForCausalLM:
    torch.manual_seed(seed)
    return GPTNeoForCausalLM(GPTNeoConfig(vocab_size=vocab, max_position_embeddings=32, hidden_size=16, num_layers=1,
                                          num_heads=2, attention_types=[[["global"], 1]], intermediate_size=32))


def checkpoint_files(model, form: str, tmp: Path) -> dict[str, bytes]:
    """What the hub holds for `model`: config files and the weights in one form, plus formats
    cfqa never fetches (a TensorFlow file)."""
    folder = tmp / f"save-{id(model)}"
    model.save_pretrained(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.endswith(".safetensors")}
    if form == "safetensors":
        files["model.safetensors"] = (folder / "model.safetensors").read_bytes()
    else:
        # As old checkpoints were published: a pickled state dict whose tied weights share storage.
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        files["pytorch_model.bin"] = buffer.getvalue()
    files["tf_model.h5"] = b"not fetched" * 100
    return files


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Four repos (T5 and GPT-Neo, each in both forms), two commits each; the models at OLD."""
    tmp = tmp_path_factory.mktemp("hub-build")
    t5_tok, gpt_tok = t5_tokenizer_files(tmp), gpt_tokenizer_files(tmp)
    repos, models = {}, {}
    for family in ("t5", "gpt-neo"):
        for form in WEIGHTS:
            repo = f"tiny/{family}-{form}"
            commits = {}
            for commit, seed in ((OLD, 0), (NEW, 1)):
                if family == "t5":
                    model, tokenizer = tiny_t5(seed=seed, vocab_size=len(AutoTokenizer.from_pretrained(tmp / "t5tok"))), t5_tok
                else:
                    model, tokenizer = tiny_gpt_neo(seed, len(AutoTokenizer.from_pretrained(tmp / "gpttok"))), gpt_tok
                commits[commit] = {**tokenizer, **checkpoint_files(model, form, tmp)}
                if commit == OLD:
                    models[repo] = model
            repos[repo] = commits
    with HubServer(repos) as server:
        yield server, models


def pin(server: HubServer, repo: str, **overrides) -> object:
    form = repo.rsplit("-", 1)[1]
    name = WEIGHTS[form]
    entry = {"revision": OLD, "sha256": {name: hashlib.sha256(server.repos[repo][OLD][name]).hexdigest()}}
    entry.update(overrides)
    return pin_of({repo: HubModelPin(**entry)}, repo)


def same_weights(loaded, original) -> bool:
    a, b = loaded.state_dict(), original.state_dict()
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("repo", ["tiny/t5-safetensors", "tiny/t5-bin", "tiny/gpt-neo-safetensors", "tiny/gpt-neo-bin"])
def test_fetched_once_then_loaded_offline_as_safetensors(hub, tmp_path, repo):
    server, models = hub
    cache = tmp_path / "cache"
    entry = fetch_model(pin(server, repo), cache, endpoint=server.endpoint)
    assert entry["revision"] == OLD and entry["repo_id"] == repo
    fetched = {path.rsplit("/", 1)[1] for method, path in server.requests if method == "GET" and "/resolve/" in path}
    weight = WEIGHTS[repo.rsplit("-", 1)[1]]
    assert weight in fetched and "tf_model.h5" not in fetched      # the pinned weights only, in the pinned form
    assert all(f"/resolve/{OLD}/" in path for _, path in server.requests if "/resolve/" in path)

    server.requests.clear()
    directory = local_model_dir(pin(server, repo), cache)
    auto = AutoModelForSeq2SeqLM if "t5" in repo else AutoModelForCausalLM
    loaded = auto.from_pretrained(directory, use_safetensors=True, local_files_only=True)
    AutoTokenizer.from_pretrained(directory, local_files_only=True)
    assert server.requests == []                                     # offline: nothing reached the hub
    assert same_weights(loaded, models[repo])                        # the pinned commit's weights, not main's
    assert not list(directory.glob("*.bin"))
    if weight.endswith(".bin"):
        record = json.loads((directory / CONVERSION_RECORD).read_text())
        assert record["loaded_with"] == "torch.load(weights_only=True)" and record["revision"] == OLD
        assert record["source_sha256"] == {weight: hashlib.sha256(server.repos[repo][OLD][weight]).hexdigest()}
        assert record["sha256"] == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()

    # A second fetch finds everything in the cache: no weights are downloaded again.
    fetch_model(pin(server, repo), cache, endpoint=server.endpoint)
    assert not [path for method, path in server.requests if method == "GET" and path.endswith(weight)]


def test_a_wrong_sha256_stops_fetch_and_names_both_digests(hub, tmp_path):
    server, _ = hub
    wrong = "0" * 64
    real = hashlib.sha256(server.repos["tiny/t5-bin"][OLD]["pytorch_model.bin"]).hexdigest()
    with pytest.raises(HubPinError, match=rf"pytorch_model\.bin has sha256 {real}, but hub\.models\.'tiny/t5-bin'"
                                          rf"\.sha256 says {wrong}"):
        fetch_model(pin(server, "tiny/t5-bin", sha256={"pytorch_model.bin": wrong}), tmp_path, endpoint=server.endpoint)
    assert not (tmp_path / "converted").exists()                    # nothing converted from an unchecked file


def test_unpinned_values_are_refused_with_what_the_hub_holds_now(hub, tmp_path):
    server, _ = hub
    with pytest.raises(HubPinError, match=rf"revision is not pinned; the hub's main branch of tiny/t5-bin is at "
                                          rf"commit {NEW} now"):
        fetch_model(pin(server, "tiny/t5-bin", revision=None), tmp_path, endpoint=server.endpoint)
    real = hashlib.sha256(server.repos["tiny/t5-bin"][OLD]["pytorch_model.bin"]).hexdigest()
    with pytest.raises(HubPinError, match=rf"sha256\.pytorch_model\.bin is not pinned; .* has sha256 {real}"):
        fetch_model(pin(server, "tiny/t5-bin", sha256={"pytorch_model.bin": None}), tmp_path, endpoint=server.endpoint)
    with pytest.raises(HubPinError, match="hub.models has no entry for 'tiny/other'"):
        pin_of({}, "tiny/other")


def test_loading_what_was_never_fetched_says_to_run_fetch(hub, tmp_path):
    server, _ = hub
    with pytest.raises(HubPinError, match=r"tiny/t5-safetensors@1{40} is not in the cache .*run `cfqa fetch`"):
        local_model_dir(pin(server, "tiny/t5-safetensors"), tmp_path / "empty")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cfqa(args: list[str], cwd: Path, endpoint: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfqa.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=tool_env(HF_ENDPOINT=endpoint, PYTHONPATH=str(PROJECT_ROOT / "workflow")), timeout=600)


def profile(tmp_path: Path, server: HubServer, base: str, lm: str, sha256: dict | None = None) -> list[str]:
    """--params for a run whose backbones are `base` and `lm`, pinned at OLD (`sha256`: other digests)."""
    pins = {}
    for repo in (base, lm):
        weight = WEIGHTS[repo.rsplit("-", 1)[1]]
        pins[repo] = {"revision": OLD, "sha256": {weight: hashlib.sha256(server.repos[repo][OLD][weight]).hexdigest()}}
    for repo, digests in (sha256 or {}).items():
        pins[repo]["sha256"] = digests
    override = tmp_path / "hub.yaml"
    override.write_text(yaml.safe_dump({"pretrain": {"hub_id": base, "lm_adapted_hub_id": lm},
                                        "hub": {"models": pins}}))
    return ["--params", str(PROJECT_ROOT / "params.yaml"), "--params", str(override)]


@pytest.mark.slow
def test_fetch_then_pretrain_offline_then_train_records_the_revision(hub, tmp_path):
    """The CLI end to end: `cfqa fetch` online, `cfqa pretrain` with the hub unreachable (a
    closed port as HF_ENDPOINT; the CLI sets HF_HUB_OFFLINE), `cfqa train` on the fetched
    backbone: its train.json's run info names the pinned commit."""
    server, models = hub
    params = profile(tmp_path, server, "tiny/t5-bin", "tiny/t5-safetensors")
    fetched = cfqa(["fetch", *params, "--out", "data/fetched.json"], tmp_path, server.endpoint)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    manifest = json.loads((tmp_path / "data/fetched.json").read_text())
    assert [(m["repo_id"], m["revision"]) for m in manifest["models"]] == [("tiny/t5-bin", OLD),
                                                                          ("tiny/t5-safetensors", OLD)]
    assert manifest["models"][0]["conversion"]["file"] == "model.safetensors"
    assert (tmp_path / "cache/hub/models--tiny--t5-bin").is_dir()  # HF_HOME: the run root's cache

    server.requests.clear()
    offline = f"http://127.0.0.1:{closed_port()}"
    pretrained = cfqa(["pretrain", *params, "--raw", "data", "--out", "models/base", "--out-lm", "models/base_lm",
                       "--fetched", "data/fetched.json"], tmp_path, offline)
    assert pretrained.returncode == 0, pretrained.stderr[-3000:]
    assert server.requests == []
    assert read_source_record(tmp_path / "models/base")["revision"] == OLD
    base = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "models/base", use_safetensors=True)
    assert same_weights(base, models["tiny/t5-bin"])

    steps = tmp_path / "steps.yaml"
    steps.write_text(yaml.safe_dump({"train": {"max_steps": 2, "eval_every": 2, "batch_size": 4, "threads": 1},
                                     "methods": {"lora": {"train": {"lr": 0.01}}}}))
    write_variants(tmp_path / "data/variants", np.random.default_rng(0))
    trained = cfqa(["train", *params, "--params", str(steps), "--method", "lora", "--seed", "0",
                    "--variants", "data/variants", "--models", "models", "--out", "models/lora/seed0",
                    "--results", "results/lora/seed0"], tmp_path, offline)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = json.loads((tmp_path / "results/lora/seed0/train.json").read_text())["run"]
    assert run["backbone_source"]["repo_id"] == "tiny/t5-bin" and run["backbone_source"]["revision"] == OLD
    assert run["backbone_source"]["converted"] is True


@pytest.mark.slow
def test_a_wrong_sha256_is_one_line_from_the_cli(hub, tmp_path):
    server, _ = hub
    params = profile(tmp_path, server, "tiny/gpt-neo-safetensors", "tiny/gpt-neo-safetensors",
                     sha256={"tiny/gpt-neo-safetensors": {"model.safetensors": "f" * 64}})
    done = cfqa(["fetch", *params, "--out", "data/fetched.json"], tmp_path, server.endpoint)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(lines) == 1 and "model.safetensors has sha256" in lines[0] and "f" * 64 in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data/fetched.json").exists()


def test_every_stage_but_fetch_runs_with_the_hub_offline_and_its_cache_in_the_run(tmp_path, monkeypatch):
    from cfqa import cli

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = dict(os.environ)
    with cli.hub_environment(tmp_path / "cache", offline=True):
        assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
        assert os.environ["HF_HOME"] == str(tmp_path / "cache")
        assert os.environ["HF_HUB_CACHE"] == str(tmp_path / "cache" / "hub")
    with cli.hub_environment(tmp_path / "cache", offline=False):
        assert "HF_HUB_OFFLINE" not in os.environ and os.environ["HF_HOME"] == str(tmp_path / "cache")
    assert dict(os.environ) == before                                  # restored


@pytest.mark.parametrize("ci, forced, quiet", [("true", None, True), ("", "1", False)])
def test_the_hub_s_progress_bars_follow_the_stage_s(tmp_path, monkeypatch, ci, forced, quiet):
    """transformers' "Loading weights" bar and the hub's download bars are silent where the
    stages' own bars are (CI=true, a job's log file), shown where they are."""
    from cfqa import cli

    monkeypatch.setenv("CI", ci)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    if forced:
        monkeypatch.setenv("CFQA_PROGRESS", forced)
    with cli.hub_environment(tmp_path / "cache", offline=True):
        assert (os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1") is quiet
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ


def test_a_run_s_cache_follows_its_root_unless_given(tmp_path, monkeypatch):
    import argparse

    from cfqa import cli

    profile = tmp_path / "profile.yaml"
    profile.write_text("run_root: runs/big\n")
    params = [PROJECT_ROOT / "params.yaml", profile]
    monkeypatch.delenv("CFQA_CACHE", raising=False)
    assert cli.cache_dir(argparse.Namespace(cache=None), params) == Path("runs/big/cache")
    monkeypatch.setenv("CFQA_CACHE", "/scratch/shared")
    assert cli.cache_dir(argparse.Namespace(cache=None), params) == Path("/scratch/shared")
    assert cli.cache_dir(argparse.Namespace(cache=Path("here")), params) == Path("here")
