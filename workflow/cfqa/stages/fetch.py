"""Stage `fetch`: everything later stages would need the network for, downloaded once into
the run's cache, checked, and recorded; every other stage runs with the hub offline (cfqa.cli).

- data (`data.source`): `nq` downloads Natural Questions into `<cache>/nq` and checks each
  file against `data.nq.sha256`; `huggingface` exports the hub dataset into
  `<cache>/huggingface`; `embedded` needs nothing;
- models: `pretrain.hub_id` and `pretrain.lm_adapted_hub_id`, each at the commit `hub.models`
  pins, into the hub cache `<cache>/hub` (HF_HOME is the cache), weights checked against
  their sha256 and a .bin-only checkpoint converted to safetensors (cfqa.model.hub). A hub id that
  names a local directory is read from there by `pretrain` and fetched by nothing.

It first checks that the spaCy pipeline `entities.ner` names is installed (cfqa.counterfactual.ner), so a
missing model stops a real run here, not hours later. Writes the manifest `--out` (what was fetched: sources, commits, digests, conversions). Rerun
safely: files already in the cache are checked, not downloaded again.
"""
from __future__ import annotations

from pathlib import Path

from cfqa.io.atomic_io import write_json
from cfqa.config import Config
from cfqa.model.hub import fetch_model, is_local_directory, pin_of
from cfqa.io.logs import get_logger
from cfqa.counterfactual.ner import require_installed

log = get_logger(__name__)


def hub_ids(cfg: Config) -> list[str]:
    """The hub models `pretrain` loads, each once; local directories are not hub models."""
    ids = [cfg.pretrain.hub_id, cfg.pretrain.lm_adapted_hub_id]
    return list(dict.fromkeys(i for i in ids if i and not is_local_directory(i)))


def run(cfg: Config, out: Path, cache: Path) -> None:
    # The first stage of a real run: a spaCy pipeline the `entities` stage will need but cannot
    # find stops the run now, not after the downloads.
    require_installed(cfg.entities.ner)
    cache.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"data": {"source": cfg.data.source}, "models": []}
    if cfg.data.source == "nq":
        from cfqa.nq.download import NQ_CACHE, fetch_nq
        manifest["data"]["sha256"] = fetch_nq(cfg.data.nq, cache / NQ_CACHE)
    elif cfg.data.source == "huggingface":
        from cfqa.nq.huggingface import HUGGINGFACE_CACHE, export_huggingface
        export_huggingface(cfg.data.huggingface, cache / HUGGINGFACE_CACHE)
        manifest["data"]["dataset_id"] = cfg.data.huggingface.dataset_id
    else:
        log.info("data.source %s: no data to fetch", cfg.data.source)
    for hub_id in hub_ids(cfg):
        manifest["models"].append(fetch_model(pin_of(cfg.hub.models, hub_id), cache))
    if not manifest["models"]:
        log.info("no hub model to fetch (pretrain.hub_id is %s)", cfg.pretrain.hub_id)
    write_json(out, manifest)
    log.info("wrote %s: data %s, models %s (cache %s)", out, cfg.data.source,
             ", ".join(f"{m['repo_id']}@{m['revision'][:12]}" for m in manifest["models"]) or "none", cache)
