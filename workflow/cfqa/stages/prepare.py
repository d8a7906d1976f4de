"""Stage `prepare`: NQ simplified records → DisentQA question/context/answer rows.

Reads raw/train.jsonl.gz and raw/dev.jsonl.gz (NQ simplified); writes
out/{train,validation,test}.jsonl rows {"id", "question", "context", "answer", "answers"} and
out/stats.json. Train/validation split NQ train by a hash of (seed, example_id), so the split
is deterministic, streaming and independent of file order; test comes from NQ dev. Files are
streamed one record at a time; the output directory appears only when everything is written.

Bad records (bytes that are not UTF-8 or not JSON, nesting too deep to decode, missing or
mistyped fields, spans out of range) are errors naming file, line and field; with
prepare.max_bad_records > 0 up to that many are skipped and counted by file and by reason in
stats.json. A truncated or corrupt gzip stream is always an error naming the line it broke at:
the rest of that file cannot be read, and a silently shorter dataset would look complete. So is
a file with no record to use (empty, or every record bad).

Every file read is checked against download's manifest.json: its size before reading (a file
cut exactly at a gzip member's end is a valid, shorter stream no reader can tell from a whole
one), its sha256 over the bytes as they are read. An example id seen before (in either file) is
a bad record of reason `duplicate_id`, skipped and counted like the others: the first one is
kept, so no question is in two splits (a dev question also in train would be tested on after
being trained on).
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import orjson

from cfqa.io.atomic_io import atomic_dir, write_json
from cfqa.config import Config, PrepareConfig
from cfqa.io.logs import get_logger
from cfqa.nq.errors import DUPLICATE_ID, BadRecordError, NoRecordsError, RecordProblem
from cfqa.nq.examples import DROP_REASONS, extract_example
from cfqa.nq.manifest import check_size, manifest_entry, sha256_file, sha256_mismatch
from cfqa.nq.reader import damage_before, gzip_lines
from cfqa.nq.simplified import decode_record

log = get_logger(__name__)

SPLITS = ("train", "validation", "test")
TRAIN_SOURCE = "train.jsonl.gz"
DEV_SOURCE = "dev.jsonl.gz"
STATS_FILE = "stats.json"
_KEPT_BAD_RECORD_EXAMPLES = 20


def validation_share(seed: int, example_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, example_id): stable across runs and platforms."""
    digest = hashlib.blake2b(f"{seed}:{example_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def train_or_validation(seed: int, validation_fraction: float) -> Callable[[str], str]:
    def split_of(example_id: str) -> str:
        return "validation" if validation_share(seed, example_id) < validation_fraction else "train"
    return split_of


@dataclass
class SplitCounts:
    records: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"records": self.records, "kept": self.kept,
                "dropped": {reason: self.dropped[reason] for reason in DROP_REASONS}}


@dataclass
class BadRecords:
    limit: int
    count: int = 0
    by_file: Counter = field(default_factory=Counter)
    by_reason: Counter = field(default_factory=Counter)
    first: list = field(default_factory=list)

    def add(self, error: BadRecordError) -> None:
        """Counts one bad record; raises once there are more than the limit allows."""
        self.count += 1
        self.by_file[Path(error.path).name] += 1
        self.by_reason[error.reason] += 1
        if self.count > self.limit:
            if self.limit == 0:
                raise error
            raise BadRecordError(error.path, error.line, error.field,
                                 f"{error.expectation} (bad record {self.count}, over "
                                 f"prepare.max_bad_records = {self.limit})", error.reason) from error
        log.warning("skipping bad record %d of at most %d: %s", self.count, self.limit, error)
        if len(self.first) < _KEPT_BAD_RECORD_EXAMPLES:
            self.first.append(error.as_dict())

    def as_dict(self) -> dict:
        return {"count": self.count, "max_bad_records": self.limit,
                "by_file": dict(sorted(self.by_file.items())),
                "by_reason": dict(sorted(self.by_reason.items())), "first": self.first}


class ExampleIds:
    """Where each example id was first seen, across every file prepare reads. One int per id
    (file number << 40 | line): NQ's 315,000 ids cost about 40 MB this way."""

    def __init__(self) -> None:
        self.first: dict[str, int] = {}
        self.files: list[str] = []

    def check(self, example_id: str, path: Path, line: int) -> None:
        """RecordProblem (reason duplicate_id) if `example_id` was seen before."""
        if not self.files or self.files[-1] != path.name:
            self.files.append(path.name)
        here = (len(self.files) - 1) << 40 | line
        seen = self.first.setdefault(example_id, here)
        if seen != here:
            where = f"{self.files[seen >> 40]}:{seen & ((1 << 40) - 1)}"
            raise RecordProblem("example_id", f"{example_id} is also the id of {where}, the one kept: a question "
                                              "must be in one split only", DUPLICATE_ID)


def prepare_file(path: Path, split_of: Callable[[str], str], writers: dict[str, BinaryIO],
                 counts: dict[str, SplitCounts], bad: BadRecords, params: PrepareConfig,
                 ids: ExampleIds | None = None) -> None:
    """Streams one raw file into the split writers, counting kept and dropped records; the file is
    checked against the manifest beside it (size first, sha256 as it is read)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: raw NQ file not found (run the download stage first)")
    entry = manifest_entry(path.parent, path.name)
    check_size(path, entry)
    log.info("reading %s (%d bytes, sha256 %s… in manifest.json)", path, path.stat().st_size, entry["sha256"][:12])
    ids = ids if ids is not None else ExampleIds()
    digest, bad_before = hashlib.sha256(), bad.count
    try:
        records = _prepare_lines(path, split_of, writers, counts, bad, params, ids, digest)
    except BadRecordError as error:      # a file that changed since download is told as such
        changed = sha256_mismatch(path, entry, sha256_file(path))
        if changed is not None:
            raise changed from error
        raise
    changed = sha256_mismatch(path, entry, digest.hexdigest())
    if changed is not None:
        raise changed
    if not records:
        raise NoRecordsError(path, f"expected NQ simplified records, but all {bad.count - bad_before} records "
                                   "are bad (skipped under prepare.max_bad_records)")


def _prepare_lines(path: Path, split_of: Callable[[str], str], writers: dict[str, BinaryIO],
                   counts: dict[str, SplitCounts], bad: BadRecords, params: PrepareConfig, ids: ExampleIds,
                   digest) -> int:
    """The records of one file into the writers; returns how many were good."""
    records = 0
    for line_number, line in gzip_lines(path, desc=f"prepare {path.name}", sha256=digest):
        try:
            record = decode_record(line)
            ids.check(str(record.example_id), path, line_number)
            split = split_of(str(record.example_id))
            outcome = extract_example(record, drop_table_and_list_contexts=params.drop_table_and_list_contexts)
        except RecordProblem as problem:
            try:
                bad.add(problem.at(path, line_number))
            except BadRecordError as error:  # stopping here: blame a damaged stream if it is one
                raise damage_before(path, line_number) or error
            continue
        records += 1
        split_counts = counts[split]
        split_counts.records += 1
        if outcome.row is None:
            split_counts.dropped[outcome.drop_reason] += 1
            continue
        split_counts.kept += 1
        writers[split].write(orjson.dumps(outcome.row))
        writers[split].write(b"\n")
    return records


def run(cfg: Config, raw: Path, out: Path) -> None:
    params = cfg.prepare
    raw, out = Path(raw), Path(out)
    counts = {split: SplitCounts() for split in SPLITS}
    bad = BadRecords(limit=params.max_bad_records)
    with atomic_dir(out) as tmp:
        writers = {split: open(tmp / f"{split}.jsonl", "wb") for split in SPLITS}
        try:
            ids = ExampleIds()
            prepare_file(raw / TRAIN_SOURCE, train_or_validation(params.seed, params.validation_fraction),
                         writers, counts, bad, params, ids)
            prepare_file(raw / DEV_SOURCE, lambda _: "test", writers, counts, bad, params, ids)
        finally:
            for writer in writers.values():
                writer.close()
        stats = {
            "params": {"seed": params.seed, "validation_fraction": params.validation_fraction,
                       "drop_table_and_list_contexts": params.drop_table_and_list_contexts},
            "sources": {"train": TRAIN_SOURCE, "validation": TRAIN_SOURCE, "test": DEV_SOURCE},
            "splits": {split: counts[split].as_dict() for split in SPLITS},
            "bad_records": bad.as_dict(),
        }
        write_json(tmp / STATS_FILE, stats)
    for split in SPLITS:
        c = counts[split]
        log.info("%s: read %d records, kept %d, dropped %s", split, c.records, c.kept,
                 dict(c.dropped.most_common()) or "none")
    log.info("wrote %s/{%s}.jsonl and %s; skipped %d bad records%s", out, ",".join(SPLITS), STATS_FILE,
             bad.count, f" by reason {dict(bad.by_reason.most_common())}" if bad.count else "")
