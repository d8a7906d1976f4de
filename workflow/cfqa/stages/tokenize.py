"""Stage `tokenize`: every variant file tokenized once per distinct backbone tokenizer, for
every job that trains or evaluates on them (cfqa.training.tokenized). Reads no params: jobs
truncate to their own lengths when they load."""
from __future__ import annotations

import time
from pathlib import Path

from cfqa.config import BACKBONE_DIRS, Config
from cfqa.io.logs import get_logger
from cfqa.training.tokenized import write_tokenized

log = get_logger(__name__)


def run(cfg: Config, variants: Path, models: Path, out: Path) -> None:
    started = time.perf_counter()
    backbones = {name: models / folder for name, folder in BACKBONE_DIRS.items()}
    index = write_tokenized(variants, backbones, out)
    log.info("read %d variant files from %s with the tokenizers of %s; wrote %s (%s) in %.1f s",
             len(index["variant_sha256"]), variants, ", ".join(map(str, backbones.values())), out,
             ", ".join(f"{name}: {key}" for name, key in index["backbones"].items()), time.perf_counter() - started)
