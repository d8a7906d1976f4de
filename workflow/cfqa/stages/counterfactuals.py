"""Stage `counterfactuals`: factual, counterfactual, empty and random contexts for every
split, the `seen` set, and data/stats.json.

Reads data/prepared/{split}.jsonl and data/entities/{split}.jsonl (joined by id); writes
data/variants/{train,validation,test,seen}/{factual,counterfactual,empty,random}.jsonl.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from cfqa.io.atomic_io import atomic_dir, read_json, read_jsonl, write_jsonl
from cfqa.config import Config
from cfqa.contract import DataStats, SeenStats, write_record
from cfqa.counterfactual import (DROP_REASONS, PARTIAL_MENTION_COUNTS, Example, RecordError, SplitVariants,
                                 SubstitutionPolicy, build_seen, build_split, example_from_records,
                                 type_histogram)
from cfqa.layout import variant_file
from cfqa.io.logs import get_logger
from cfqa.io.progress import progress

log = get_logger(__name__)
SPLITS = ("train", "validation", "test")
SEEN = "seen"
COUNTERFACTUAL_ONLY = {"train": False, "validation": False, "test": True}
VARIANT_COVERAGE = (
    "train and validation: factual, empty and random rows for every example (random only where "
    "another context lacks the answer), counterfactual rows only for examples that got one; "
    "test and seen: only questions that got a counterfactual, the same ids in the same order in "
    "all four variants")


def _track(items, desc: str, total: int):
    return progress(items, desc=desc, total=total, unit="example")


def load_examples(prepared: Path, entities: Path) -> list[Example]:
    """Prepared rows joined with their entity rows by id, in prepared order."""
    for path in (prepared, entities):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (run the stage that writes it first)")
    types = {}
    for number, row in enumerate(read_jsonl(entities), start=1):
        if "id" not in row:
            raise RecordError(f"{entities}: record {number}: missing field 'id'")
        types[row["id"]] = row
    examples, seen_ids = [], set()
    for number, row in enumerate(read_jsonl(prepared), start=1):
        where = f"{prepared}: record {number}"
        entity = types.get(row.get("id"))
        if entity is None:
            raise RecordError(f"{where}: id {row.get('id')!r} has no row in {entities} "
                              f"(rerun the entities stage)")
        example = example_from_records(row, entity, f"{where} / {entities}")
        if example.id in seen_ids:
            raise RecordError(f"{where}: duplicate id {example.id!r}; ids must be unique within a split")
        seen_ids.add(example.id)
        examples.append(example)
    if len(types) != len(examples):
        raise RecordError(f"{entities}: {len(types)} rows for {len(examples)} examples in {prepared} "
                          f"(rerun the entities stage)")
    return examples


def _write_split(variants: Path, split: str, result: SplitVariants) -> None:
    for variant, rows in result.rows.items():
        write_jsonl(variant_file(variants, split, variant), rows)


def remove_orphan(out: Path, stats: Path) -> None:
    """Variants without their stats.json are what a run killed between its two commits left."""
    if out.is_dir() and not stats.exists():
        log.info("removing %s: it has no %s (a run was killed between its two commits)", out, stats)
        shutil.rmtree(out)


def run(cfg: Config, prepared: Path, entities: Path, out: Path, stats: Path) -> None:
    remove_orphan(out, stats)
    params = cfg.counterfactuals
    policy = SubstitutionPolicy(policy=params.policy, within=params.substitute_within, seed=params.seed)
    examples = {split: load_examples(prepared / f"{split}.jsonl", entities / f"{split}.jsonl") for split in SPLITS}
    results = {}
    for split in SPLITS:
        per_question = params.train_counterfactuals_per_question if split == "train" else 1
        results[split] = build_split(split, examples[split], policy, COUNTERFACTUAL_ONLY[split], _track,
                                     counterfactuals_per_question=per_question)
        log.info("%s: read %d examples; wrote %s; no counterfactual: %s", split, len(examples[split]),
                 results[split].counts(), dict(results[split].drops))
    seen, fresh = build_seen(examples["train"], results["train"], params.seen_size, policy, _track)
    results[SEEN] = seen
    log.info("seen: %d training questions (asked for %d), %d with a substitute other than train's",
             len(seen.substitutes), params.seen_size, fresh)
    if len(seen.substitutes) < params.seen_size:
        log.warning("seen: only %d training questions have a counterfactual; seen_size is %d",
                    len(seen.substitutes), params.seen_size)
    partial = {name: {measure: result.skipped_partial_mentions.get(measure, 0) for measure in PARTIAL_MENTION_COUNTS}
               for name, result in results.items()}
    log.info("answer matches inside longer names or numbers, left unreplaced: %s", partial)
    prepare_stats = prepared / "stats.json"
    record = DataStats(
        policy=params.policy,
        substitute_within=params.substitute_within,
        seed=params.seed,
        ner=cfg.entities.ner,
        counts={name: result.counts() for name, result in results.items()},
        variant_coverage=VARIANT_COVERAGE,
        examples={split: len(examples[split]) for split in SPLITS},
        with_counterfactual={split: len(results[split].substitutes) for split in SPLITS},
        drops={split: {reason: results[split].drops.get(reason, 0) for reason in DROP_REASONS}
               for split in SPLITS},
        answer_types={
            split: {"all": type_histogram(examples[split]),
                    "counterfactual": type_histogram(examples[split], set(results[split].substitutes))}
            for split in SPLITS
        },
        # split -> answer matches inside longer names or numbers that substitution left alone
        partial_mentions=partial,
        seen=SeenStats(requested=params.seen_size, size=len(seen.substitutes), fresh_substitutes=fresh),
        prepare=read_json(prepare_stats) if prepare_stats.is_file() else None,
    )
    commit(out, stats, results, record)


def commit(out: Path, stats: Path, results: dict[str, SplitVariants], record: DataStats) -> None:
    """Writes the two outputs so that stats.json present means variants/ is complete and from
    the same run. Two paths cannot be renamed at once, so: stats.json is removed first, the
    variants directory is committed (one rename), and stats.json is committed last. A run
    killed in between leaves variants/ without stats.json: both engines see a missing output
    and rerun the stage, whose first step removes that orphan (`remove_orphan`), so no reader
    ever pairs old statistics with new variants or the reverse."""
    stats.unlink(missing_ok=True)
    with atomic_dir(out) as tmp:
        for name, result in results.items():
            _write_split(tmp, name, result)
    log.info("wrote %s/{%s}/{factual,counterfactual,empty,random}.jsonl", out, ",".join(results))
    write_record(stats, record)
    log.info("wrote %s", stats)
