"""The Hugging Face copy of NQ (google-research-datasets/natural_questions) → the simplified files.

Its rows hold the original tokens in columns (`document.tokens` = {token: [...], is_html: [...],
start_byte, end_byte}; `annotations` = {id: [...], long_answer: [{...}], short_answers:
[{start_token: [...], ...}], yes_no_answer: [-1 | 0 | 1]}); they are converted to the same
simplified schema as the official files: tokens joined by single spaces (blanks inside a token
→ "_"), HTML tags kept, spans as [start, end) token indices. Splits: train → train.jsonl.gz,
validation → dev.jsonl.gz. The dataset is streamed (its train split is ~45 GB of parquet).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from cfqa.config import HuggingFaceSourceConfig
from cfqa.io.logs import get_logger
from cfqa.nq.errors import RecordProblem
from cfqa.nq.original_format import simplified_token
from cfqa.nq.writer import atomic_jsonl_gz
from cfqa.io.progress import progress

log = get_logger(__name__)

SPLIT_FILES = {"train": "train.jsonl.gz", "validation": "dev.jsonl.gz"}
HUGGINGFACE_CACHE = "huggingface"   # `cfqa fetch` exports into this folder of the run's cache
YES_NO = {-1: "NONE", 0: "NO", 1: "YES"}  # the dataset's ClassLabel(names=["NO", "YES"]), -1 = none

LoadSplit = Callable[[str, str], Iterable[dict]]


class HuggingFaceExportError(RuntimeError):
    pass


def rows_of(columns: dict[str, list] | list[dict]) -> list[dict]:
    """A `datasets` sequence of structs comes back as a dict of columns; turn it into rows."""
    if isinstance(columns, list):
        return columns
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*(columns[name] for name in names))]


def _span(span: dict, *extra: str) -> dict:
    return {"start_token": span["start_token"], "end_token": span["end_token"],
            **{key: span.get(key, -1) for key in extra}}


def to_simplified(row: dict) -> dict:
    """One Hugging Face NQ row in the simplified schema."""
    try:
        document, question = row["document"], row["question"]
        text = " ".join(simplified_token(token) for token in document["tokens"]["token"])
        annotations = [
            {"yes_no_answer": YES_NO[annotation["yes_no_answer"]],
             "long_answer": _span(annotation["long_answer"], "candidate_index"),
             "short_answers": [_span(span) for span in rows_of(annotation["short_answers"])],
             "annotation_id": annotation["id"]}
            for annotation in rows_of(row["annotations"])
        ]
        candidates = [{"start_token": c["start_token"], "end_token": c["end_token"],
                       "top_level": c.get("top_level", True)}
                      for c in rows_of(row.get("long_answer_candidates") or [])]
        return {"example_id": row["id"], "question_text": question["text"],
                "document_url": document.get("url", ""), "document_text": text,
                "long_answer_candidates": candidates, "annotations": annotations}
    except KeyError as error:
        raise RecordProblem(str(error.args[0]), "required field is missing (or an unknown yes_no_answer)") from error
    except TypeError as error:
        raise RecordProblem(None, f"expected the natural_questions schema: {error}") from error


def load_streaming_split(dataset_id: str, split: str) -> Iterable[dict]:
    import datasets  # heavy import, only for this source

    return datasets.load_dataset(dataset_id, split=split, streaming=True)


def export_huggingface(hf_cfg: HuggingFaceSourceConfig, raw_dir: Path, *,
                       load_split: LoadSplit = load_streaming_split) -> None:
    """Writes raw_dir/train.jsonl.gz and raw_dir/dev.jsonl.gz from the Hugging Face dataset."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for split, file_name in SPLIT_FILES.items():
        destination = raw_dir / file_name
        try:
            rows = load_split(hf_cfg.dataset_id, split)
        except Exception as error:  # the hub client raises many types; all mean "could not load"
            raise HuggingFaceExportError(
                f"could not load split {split!r} of the Hugging Face dataset {hf_cfg.dataset_id!r} "
                f"({type(error).__name__}: {error}); it needs network access to the hub "
                f"or a local cache") from error
        with atomic_jsonl_gz(destination) as writer:
            for number, row in enumerate(progress(rows, desc=f"export {split}", unit="rec"), start=1):
                try:
                    writer.write(to_simplified(row))
                except RecordProblem as problem:
                    raise problem.at(f"{hf_cfg.dataset_id}[{split}]", number) from problem
            count = writer.count
        log.info("exported %d %s records of %s to %s", count, split, hf_cfg.dataset_id, destination)
