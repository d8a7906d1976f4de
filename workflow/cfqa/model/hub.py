"""Hub models pinned to a commit, fetched once, then loaded offline.

params.yaml `hub.models` pins every hub model a stage loads: its commit (`revision`) and the
sha256 of each weight file (`sha256`, file name -> digest; the names say which files and which
format). `cfqa fetch`, the one stage that uses the network, downloads exactly those files and
the model's small side files (config, tokenizer) with huggingface_hub's `snapshot_download`
into the hub cache under the run's cache folder (HF_HOME, see cfqa.cli), checks every weight
file's sha256, and converts a checkpoint published only as `pytorch_model.bin` to safetensors
once: `torch.load(weights_only=True)` (tensors only, no pickled code), every tensor written
with safetensors and read back equal, the conversion recorded in `conversion.json` beside it.
Later stages find the files with `local_files_only=True` and load safetensors only.

A value left null in params is not yet pinned: fetch refuses it and says what the hub holds
now (the current commit of `main`, the digest of the downloaded file), to be checked and
written into params by a person.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from cfqa.io.atomic_io import atomic_dir, read_json, write_json
from cfqa.io.digests import sha256_file
from cfqa.errors import BadInput
from cfqa.io.logs import get_logger

log = get_logger(__name__)

HUB_CACHE = "hub"                  # huggingface_hub's cache under HF_HOME (its default layout)
CONVERTED = "converted"            # safetensors made from .bin checkpoints, per repo and commit
CONVERSION_RECORD = "conversion.json"
SOURCE_RECORD = "hub_source.json"  # beside a saved hub backbone: the pinned commit and files it came from
SAFETENSORS, PICKLE = ".safetensors", ".bin"
# Small files a model needs besides its weights: config, generation config, tokenizer.
SIDE_FILES = ("*.json", "*.model", "*.txt")
SKIPPED_SIDE_FILES = ("*.bin.index.json",)        # a .bin shard index: its shards are converted
COMMIT = re.compile(r"^[0-9a-f]{40}$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")


class HubPinError(BadInput, ValueError):
    """A hub model is not pinned, not in the cache, or its files are not the pinned ones."""


@dataclass(frozen=True)
class HubPin:
    """One entry of params.yaml `hub.models`."""
    repo_id: str
    revision: str | None
    sha256: Mapping[str, str | None]

    @property
    def key(self) -> str:
        return f"hub.models.{self.repo_id!r}"

    @property
    def weight_files(self) -> list[str]:
        return sorted(self.sha256)

    @property
    def converts(self) -> bool:
        """True when the weights are published as pickles only (`pytorch_model.bin`)."""
        return all(name.endswith(PICKLE) for name in self.sha256)

    def folder_name(self) -> str:
        return f"{self.repo_id.replace('/', '--')}"


def pin_of(hub_models: Mapping, repo_id: str) -> HubPin:
    """The pin params.yaml gives `repo_id` (HubPinError naming the key when there is none)."""
    entry = hub_models.get(repo_id)
    if entry is None:
        raise HubPinError(f"hub.models has no entry for {repo_id!r}: pin it with its commit (`revision`) and the "
                          f"sha256 of each weight file (`sha256: {{model.safetensors: ...}}`)")
    return HubPin(repo_id=repo_id, revision=entry.revision, sha256=dict(entry.sha256))


def is_local_directory(hub_id: str) -> bool:
    """`pretrain.hub_id` may name a save_pretrained directory instead of a hub model."""
    return Path(hub_id).is_dir()


def _patterns(pin: HubPin) -> list[str]:
    return [*SIDE_FILES, *pin.weight_files]


def _endpoint() -> str | None:
    # Read when called, not when huggingface_hub is imported: tests point it at a local server.
    return os.environ.get("HF_ENDPOINT") or None


# ---------------------------------------------------------------------------- fetch (network)

def fetch_model(pin: HubPin, cache: Path, *, endpoint: str | None = None) -> dict:
    """Downloads the pinned files into `cache`, checks them, converts .bin weights; returns
    the manifest entry (repo, commit, digests, where the loadable files are, the conversion)."""
    from huggingface_hub import HfApi, snapshot_download

    for name in ("httpx", "httpx2"):           # one line per HTTP request otherwise; fetch logs per file
        logging.getLogger(name).setLevel(logging.WARNING)
    endpoint = endpoint or _endpoint()
    if pin.revision is None:
        current = HfApi(endpoint=endpoint).model_info(pin.repo_id).sha
        raise HubPinError(f"{pin.key}.revision is not pinned; the hub's main branch of {pin.repo_id} is at commit "
                          f"{current} now: review that commit and write it into params.yaml")
    if not COMMIT.match(pin.revision):
        raise HubPinError(f"{pin.key}.revision must be a 40-hex commit sha, got {pin.revision!r}")
    log.info("fetching %s at %s: %s and side files %s", pin.repo_id, pin.revision, ", ".join(pin.weight_files),
             ", ".join(SIDE_FILES))
    snapshot = Path(snapshot_download(pin.repo_id, revision=pin.revision, cache_dir=cache / HUB_CACHE,
                                      allow_patterns=_patterns(pin), ignore_patterns=list(SKIPPED_SIDE_FILES),
                                      endpoint=endpoint))
    digests = check_weights(pin, snapshot)
    entry = {"repo_id": pin.repo_id, "revision": pin.revision, "sha256": digests,
             "snapshot": snapshot.relative_to(cache.resolve()).as_posix(), "conversion": None}
    if pin.converts:
        target = converted_dir(pin, cache)
        entry["conversion"] = convert_to_safetensors(pin, snapshot, target)
    log.info("fetched %s at %s: %s", pin.repo_id, pin.revision,
             ", ".join(f"{name} sha256 {digest[:12]}" for name, digest in digests.items()))
    return entry


def check_weights(pin: HubPin, snapshot: Path) -> dict[str, str]:
    """The sha256 of each pinned weight file, each equal to its pin (HubPinError otherwise)."""
    digests = {}
    for name in pin.weight_files:
        path = snapshot / name
        if not path.is_file():
            raise HubPinError(f"{pin.repo_id}@{pin.revision}: {name} is not in the snapshot {snapshot}; "
                              f"{pin.key}.sha256 names a file the commit does not have")
        digest = sha256_file(path)
        expected = pin.sha256[name]
        if expected is None:
            raise HubPinError(f"{pin.key}.sha256.{name} is not pinned; the file downloaded from commit "
                              f"{pin.revision} has sha256 {digest}: check it and write it into params.yaml")
        if digest != expected:
            raise HubPinError(f"{pin.repo_id}@{pin.revision}: {name} has sha256 {digest}, but {pin.key}.sha256 "
                              f"says {expected}; the file is not the pinned one")
        digests[name] = digest
    return digests


def converted_dir(pin: HubPin, cache: Path) -> Path:
    return cache / CONVERTED / pin.folder_name() / str(pin.revision)


def convert_to_safetensors(pin: HubPin, snapshot: Path, target: Path) -> dict:
    """The .bin weights of `snapshot` as one model.safetensors in `target`, with the side files
    copied beside it, so that `target` is a complete model directory. Reused when `target`
    records the same source digests. Tensors that share storage in the pickle (tied
    embeddings) are written as separate copies, which every architecture loads correctly."""
    import safetensors
    import torch
    from safetensors.torch import load_file, save_file

    sources = {name: pin.sha256[name] for name in pin.weight_files}
    record_path = target / CONVERSION_RECORD
    if record_path.is_file():
        record = read_json(record_path)
        if record.get("source_sha256") == sources and (target / record["file"]).is_file():
            log.info("%s at %s: already converted to %s", pin.repo_id, pin.revision, target)
            return record
    state: dict[str, torch.Tensor] = {}
    for name in pin.weight_files:
        # weights_only: only tensors and plain containers are unpickled, never code.
        loaded = torch.load(snapshot / name, map_location="cpu", weights_only=True)
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise HubPinError(f"{pin.repo_id}@{pin.revision}: {name} is not a state dict of tensors")
        state.update(loaded)
    seen: set[int] = set()
    tensors = {}
    for key in sorted(state):
        tensor = state[key].contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        tensors[key] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    with atomic_dir(target) as tmp:
        for side in snapshot.iterdir():
            if side.is_file() and not side.name.endswith(PICKLE) and not side.name.endswith(".bin.index.json"):
                shutil.copyfile(side, tmp / side.name)           # follows the cache's symlinks to blobs
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        written = load_file(str(tmp / "model.safetensors"))
        if set(written) != set(tensors) or not all(torch.equal(written[k], tensors[k]) for k in tensors):
            raise HubPinError(f"{pin.repo_id}@{pin.revision}: the safetensors written from {', '.join(sources)} "
                              f"do not read back equal")
        record = {"repo_id": pin.repo_id, "revision": pin.revision, "source_sha256": sources,
                  "file": "model.safetensors", "sha256": sha256_file(tmp / "model.safetensors"),
                  "tensors": len(tensors), "loaded_with": "torch.load(weights_only=True)",
                  "torch": torch.__version__, "safetensors": safetensors.__version__}
        write_json(tmp / CONVERSION_RECORD, record)
    log.info("converted %s of %s@%s to %s (%d tensors, sha256 %s)", ", ".join(sources), pin.repo_id, pin.revision,
             target / "model.safetensors", record["tensors"], record["sha256"][:12])
    return record


# ---------------------------------------------------------------------------- load (offline)

def local_model_dir(pin: HubPin, cache: Path, *, verify: bool = True) -> Path:
    """The directory to load `pin` from, offline: its cached snapshot, or the converted copy of
    a .bin checkpoint. `verify` re-checks the weights' sha256 (the cache can be shared and
    edited). HubPinError when fetch has not put it there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if pin.revision is None or any(digest is None for digest in pin.sha256.values()):
        raise HubPinError(f"{pin.key} is not pinned (a null revision or sha256 in params.yaml); pin it and run "
                          f"`cfqa fetch` where the network is")
    try:
        snapshot = Path(snapshot_download(pin.repo_id, revision=pin.revision, cache_dir=cache / HUB_CACHE,
                                          allow_patterns=_patterns(pin), ignore_patterns=list(SKIPPED_SIDE_FILES),
                                          local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError) as error:
        raise HubPinError(f"{pin.repo_id}@{pin.revision} is not in the cache {cache / HUB_CACHE}; run `cfqa fetch` "
                          f"(with the same --cache) where the network is") from error
    if not pin.converts:
        if verify:
            check_weights(pin, snapshot)
        return snapshot
    target = converted_dir(pin, cache)
    record_path = target / CONVERSION_RECORD
    if not record_path.is_file():
        raise HubPinError(f"{pin.repo_id}@{pin.revision}: no safetensors conversion in {target}; run `cfqa fetch`")
    record = read_json(record_path)
    if record.get("source_sha256") != dict(pin.sha256):
        raise HubPinError(f"{record_path}: converted from other files than {pin.key}.sha256 pins; run `cfqa fetch`")
    if verify and sha256_file(target / record["file"]) != record["sha256"]:
        raise HubPinError(f"{target / record['file']}: sha256 differs from its conversion record; delete {target} "
                          f"and run `cfqa fetch`")
    return target


def write_source_record(directory: Path, pin: HubPin, loaded_from: Path) -> None:
    """Which hub commit and files a saved backbone came from (read into every result's run info)."""
    record = {"repo_id": pin.repo_id, "revision": pin.revision, "sha256": dict(pin.sha256),
              "converted": pin.converts}
    if pin.converts:
        record["conversion"] = read_json(loaded_from / CONVERSION_RECORD)
    write_json(directory / SOURCE_RECORD, record)


def read_source_record(directory: Path) -> dict | None:
    """The hub source of a saved backbone; None for one pretrained here or read from a local
    directory. Results record it in their run info (`backbone_source`)."""
    path = Path(directory) / SOURCE_RECORD
    return read_json(path) if path.is_file() else None
