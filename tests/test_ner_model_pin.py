"""spaCy's official en_core_web_sm for real runs: pinned by URL and sha256, installed only with
--require-hashes (by `make install-ner-model` and both images), its version the locked spaCy's;
where it is missing, the first stage of a real run stops with one line saying how to get it."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import spacy
from packaging.requirements import Requirement

from cfqa import cli
from cfqa.config import PROJECT_ROOT
from cfqa.counterfactual import ner
from cfqa.counterfactual.ner import NERUnavailable, require_installed

LOCK = PROJECT_ROOT / "requirements-ner-model.lock"
DOCKERFILES = [PROJECT_ROOT / "containers" / name for name in ("Dockerfile", "Dockerfile.cpu")]
INSTALL = "pip install --require-hashes --no-deps -r /opt/cfqa/requirements-ner-model.lock"


def pinned() -> tuple[Requirement, list[str]]:
    text = re.sub(r"(?m)^#.*\n", "", LOCK.read_text()).replace("\\\n", " ")
    requirement, *options = text.split()
    requirement = Requirement(" ".join([requirement, *[o for o in options if not o.startswith("--")]]))
    return requirement, [o for o in options if o.startswith("--hash=")]


def test_the_model_is_pinned_by_release_url_and_sha256_for_the_locked_spacy():
    requirement, hashes = pinned()
    assert requirement.name == "en-core-web-sm"
    assert requirement.url.startswith("https://github.com/explosion/spacy-models/releases/download/")
    assert [h for h in hashes if re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", h)] == hashes and len(hashes) == 1
    model_minor = re.search(r"en_core_web_sm-(\d+\.\d+)\.\d+-py3", requirement.url)[1]
    locked_spacy = re.search(r"(?m)^spacy==(\S+)", (PROJECT_ROOT / "requirements.lock").read_text())[1]
    assert locked_spacy.startswith(model_minor + ".")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_it_from_the_lock_with_hashes_only(dockerfile):
    text = dockerfile.read_text()
    requirement, _ = pinned()
    assert "COPY requirements-ner-model.lock /opt/cfqa/" in text and INSTALL in text
    assert f"ARG SPACY_MODEL_URL={requirement.url}" in text           # the switch probes the pinned URL
    assert 'pip install --no-deps "${SPACY_MODEL_URL}"' not in text   # never the bare URL, unhashed


def test_make_install_ner_model_installs_it_with_hashes():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    recipe = re.search(r"(?ms)^install-ner-model:.*?\n\n", makefile)[0]
    assert "pip install --quiet --require-hashes --no-deps -r requirements-ner-model.lock" in recipe
    assert re.search(rf"(?m)^SPACY_MODEL_URL := {re.escape(pinned()[0].url)}$", makefile)


def test_a_missing_model_stops_fetch_at_once_with_one_line_on_how_to_get_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(ner, "_is_installed", lambda name: False)
    with pytest.raises(NERUnavailable, match=r"'en_core_web_sm' \(params.yaml entities.ner\) is not installed: "
                                             r"`make install-ner-model`"):
        require_installed("en_core_web_sm")
    require_installed("offline")                                      # the embedded default needs none
    override = tmp_path / "real.yaml"
    override.write_text("entities: {ner: en_core_web_sm}\ndata: {source: nq}\n")
    code = cli.main(["--cache", str(tmp_path / "cache"), "fetch", "--params", str(PROJECT_ROOT / "params.yaml"),
                     "--params", str(override), "--out", str(tmp_path / "fetched.json")])
    err = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert code == 2 and len(err) == 1 and "make install-ner-model" in err[0], err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "fetched.json").exists()   # nothing downloaded


def test_the_installed_check_agrees_with_spacy_and_needs_no_spacy_import():
    """fetch checks the pipeline without importing spaCy (and the torch it brings): it answers
    as spaCy's own check does."""
    for name in ("en_core_web_sm", "en_core_web_nonexistent", "spacy", "orjson"):
        assert ner._is_installed(name) == spacy.util.is_package(name), name
    code = "import sys, cfqa.stages.fetch; print(sorted({'spacy', 'torch'} & set(sys.modules)))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"
