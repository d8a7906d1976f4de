"""Natural Questions *simplified* records for the embedded world.

The records use the official schema (example_id, question_text, document_text,
long_answer_candidates, annotations with [start, end) token spans over
document_text.split(" ")), so they go through exactly the prepare code real NQ goes through.
"""
from __future__ import annotations

import hashlib

from cfqa.world.documents import Page


def stable_id(*parts: str) -> int:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # positive 63-bit, like NQ's example ids


def occurrences(haystack: tuple[str, ...], needle: tuple[str, ...]) -> list[int]:
    return [start for start in range(len(haystack) - len(needle) + 1)
            if haystack[start:start + len(needle)] == needle]


def find_span(haystack: tuple[str, ...], needle: tuple[str, ...], subject: tuple[str, ...] = ()) -> int:
    """Start of the answer's mention, skipping mentions inside the subject's name ("Panama"
    in "Panama City is a city in Panama"); the first mention when the answer is the name."""
    starts = occurrences(haystack, needle)
    if not starts:
        raise ValueError(f"answer {' '.join(needle)!r} is not in paragraph {' '.join(haystack)!r}")
    inside_subject = {position for begin in (occurrences(haystack, subject) if subject else [])
                      for position in range(begin, begin + len(subject))}
    outside = [start for start in starts
               if inside_subject.isdisjoint(range(start, start + len(needle)))]
    return (outside or starts)[0]


def nq_record(*, example_id: int, question: str, page: Page, paragraph_index: int,
              answer: str, subject: str, url: str) -> dict:
    document: list[str] = ["<H1>", *page.title.split(" "), "</H1>"]
    candidates = []
    for paragraph in page.paragraphs:
        start = len(document)
        document.extend(["<P>", *paragraph, "</P>"])
        candidates.append({"start_token": start, "end_token": len(document), "top_level": True})
    long_answer = candidates[paragraph_index]
    answer_tokens = tuple(answer.split(" "))
    within = find_span(page.paragraphs[paragraph_index], answer_tokens, tuple(subject.split(" ")))
    short_start = long_answer["start_token"] + 1 + within  # +1 skips the paragraph's opening <P>
    return {
        "example_id": example_id,
        "question_text": question,
        "document_text": " ".join(document),
        "document_url": url,
        "long_answer_candidates": candidates,
        "annotations": [{
            "annotation_id": stable_id("annotation", str(example_id)),
            "long_answer": {**{k: long_answer[k] for k in ("start_token", "end_token")},
                            "candidate_index": paragraph_index},
            "short_answers": [{"start_token": short_start, "end_token": short_start + len(answer_tokens)}],
            "yes_no_answer": "NONE",
        }],
    }
