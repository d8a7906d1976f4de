"""Entity substitution, substitute policies, the four variants and the counterfactuals stage."""
from __future__ import annotations

import dataclasses
import random

import orjson
import pytest

from cfqa import config as config_module
from cfqa.counterfactual import (ANSWER_NOT_IN_CONTEXT, ANSWER_ONLY_IN_LONGER_NAMES, DROP_REASONS, NO_SUBSTITUTE,
                                 UNTYPED, Example, MentionCounts, RecordError, SubstitutePool, SubstitutionPolicy,
                                 answer_in_context, build_seen, build_split, choose_random_context,
                                 choose_substitute, count_mentions, counterfactual_eligibility,
                                 counterfactual_row, donor_ring, example_rng, normalize_answer, replace_answers,
                                 whole_mention_in_context)
from cfqa.formats import UNANSWERABLE, VARIANTS
from cfqa.stages import counterfactuals as counterfactuals_stage

GROUP_OF = {"GPE": "LOCATION", "LOC": "LOCATION", "DATE": "DATE", "CARDINAL": "NUMERIC", "PERSON": "PERSON"}


def make_example(example_id, answer, label, context=None, answers=None, question=None) -> Example:
    answers = tuple(answers or (answer,))
    return Example(id=example_id, question=question or f"question {example_id}",
                   context=context if context is not None else f"The answer to {example_id} is {answer}.",
                   answer=answer, answers=answers, label=label, group=GROUP_OF.get(label))


COUNTRIES = ["France", "Germany", "Spain", "Italy", "Poland", "Greece", "Norway", "Sweden"]
CONTINENTS = ["Europe", "Asia", "Africa", "Oceania"]
YEARS = ["1990", "1815", "1066", "2001"]


def corpus(size: int = 24) -> list[Example]:
    """A split mixing GPE, LOC and DATE answers, plus untyped and answer-not-in-context rows."""
    examples = []
    for i in range(size):
        kind = i % 3
        if kind == 0:
            answer, label = COUNTRIES[i % len(COUNTRIES)], "GPE"
        elif kind == 1:
            answer, label = CONTINENTS[i % len(CONTINENTS)], "LOC"
        else:
            answer, label = YEARS[i % len(YEARS)], "DATE"
        examples.append(make_example(f"q{i}", answer, label,
                                     context=f"Record {i}: the answer is {answer}, and {answer} it stays."))
    examples.append(make_example("untyped", "blue", None, context="The sky is blue."))
    examples.append(make_example("absent", "France", "GPE", context="Nothing about it here."))
    return examples


# --- substitution -----------------------------------------------------------------------------

def test_replace_every_occurrence_case_insensitively():
    context = "France is big. FRANCE borders Spain; france has Paris."
    replaced, count = replace_answers(context, ["France"], "Peru")
    assert replaced == "Peru is big. Peru borders Spain; Peru has Paris."
    assert count == 3


def test_answer_inside_a_longer_word_is_not_replaced():
    context = "Frances visited France and FranceTV, not Frances-ville."
    replaced, count = replace_answers(context, ["France"], "Peru")
    assert replaced == "Frances visited Peru and FranceTV, not Frances-ville."
    assert count == 1
    assert not answer_in_context("Frances and FranceTV", ["France"])


def test_several_gold_answers_longest_first():
    context = "New York City is in New York. Some say NYC."
    replaced, count = replace_answers(context, ["New York", "New York City", "NYC"], "Boston")
    assert replaced == "Boston is in Boston. Some say Boston."
    assert count == 3


def test_answer_matches_across_whitespace_and_substitute_is_literal():
    replaced, count = replace_answers("born 12  May\n1990 in X", ["12 May 1990"], r"1 \1 2000")
    assert replaced == r"born 1 \1 2000 in X"
    assert count == 1


def test_answers_with_punctuation_at_the_edges():
    replaced, count = replace_answers("Made in the U.S. by U.S.A. people", ["U.S."], "Peru")
    assert replaced == "Made in the Peru by U.S.A. people"
    assert count == 1


@pytest.mark.parametrize("context, answer, substitute, expected, partial", [
    ("Cape Town is in South Africa, in Africa.", "Africa", "Asia", "Cape Town is in South Africa, in Asia.", 1),
    ("French Guiana speaks French.", "French", "Spanish", "French Guiana speaks Spanish.", 1),
    ("French Southern Territories, French", "French", "Spanish", "French Southern Territories, Spanish", 1),
    ("the Central African Republic; African", "African", "Asian", "the Central African Republic; Asian", 1),
    ("Guinea-Bissau borders Guinea.", "Guinea", "Mali", "Guinea-Bissau borders Mali.", 1),
    ("Papua New Guinea is not Guinea", "Guinea", "Mali", "Papua New Guinea is not Mali", 1),
    ("the Republic of the Congo and the Congo", "Congo", "Chad", "the Republic of the Congo and the Chad", 1),
    ("the Gulf of Mexico borders Mexico", "Mexico", "Peru", "the Gulf of Mexico borders Peru", 1),
    ("1,330,068 people; 1 city", "1", "4", "1,330,068 people; 4 city", 1),
    ("330,1 and 1.5 and 2.1 but 1", "1", "4", "330,1 and 1.5 and 2.1 but 4", 3),
])
def test_answer_inside_a_longer_name_or_number_is_left_alone(context, answer, substitute, expected, partial):
    replaced, count = replace_answers(context, [answer], substitute)
    assert replaced == expected
    assert count == 1
    assert count_mentions(context, [answer]) == MentionCounts(whole=1, partial=partial)


@pytest.mark.parametrize("context, answer, substitute, expected", [
    ("It lies in Africa.", "Africa", "Asia", "It lies in Asia."),
    ("AFRICA, the continent", "Africa", "Asia", "Asia, the continent"),
    ("Africa's largest city", "Africa", "Asia", "Asia's largest city"),        # possessive: still Africa
    ("In Africa and The Africa", "Africa", "Asia", "In Asia and The Asia"),     # stop words are no names
    ("an Africa-based firm", "Africa", "Asia", "an Asia-based firm"),          # lower-case compound
    ("(Africa) South, Africa", "Africa", "Asia", "(Asia) South, Asia"),        # punctuation breaks a name
    ("Africa\nAsia", "Africa", "Oceania", "Oceania\nAsia"),                   # a line break ends a name
    ("in May 1990.", "1990", "1815", "in May 1815."),                         # a date's year is its own mention
    ("a $1 million gift, 1%", "1", "4", "a $4 million gift, 4%"),
    ("ends with 1.", "1", "4", "ends with 4."),
])
def test_whole_mentions_are_still_replaced(context, answer, substitute, expected):
    replaced, count = replace_answers(context, [answer], substitute)
    assert replaced == expected
    assert count_mentions(context, [answer]) == MentionCounts(whole=count, partial=0)


def test_a_question_needs_a_whole_mention_for_a_counterfactual():
    only_partial = make_example("za", "Africa", "LOC", context="Cape Town is a city of South Africa.")
    both = make_example("ct", "Africa", "LOC", context="Cape Town is a city of South Africa, in Africa.")
    absent = make_example("no", "Africa", "LOC", context="Lyon is in France.")
    assert answer_in_context(only_partial.context, only_partial.answers)        # strict: any occurrence
    assert not whole_mention_in_context(only_partial.context, only_partial.answers)
    assert counterfactual_eligibility(only_partial) == ANSWER_ONLY_IN_LONGER_NAMES
    assert counterfactual_eligibility(absent) == ANSWER_NOT_IN_CONTEXT
    assert counterfactual_eligibility(both) is None
    with pytest.raises(ValueError, match="'za': no gold answer occurs in the context as a whole mention"):
        counterfactual_row(only_partial, "Asia")
    assert counterfactual_row(both, "Asia")["context"] == "Cape Town is a city of South Africa, in Asia."


def test_split_counts_partial_mentions_and_drops_questions_with_only_partial_ones():
    examples = [make_example("za", "Africa", "LOC", context="Cape Town is a city of South Africa."),
                make_example("ct", "Africa", "LOC", context="South Africa and South Africa, in Africa."),
                make_example("fr", "French", "LANGUAGE", context="French Guiana speaks French."),
                make_example("eu", "Europe", "LOC", context="Lyon is in Europe."),
                make_example("as", "Asia", "LOC", context="Lima is not in Asia."),
                make_example("oc", "Oceania", "LOC", context="Suva is in Oceania.")]
    result = build_split("train", examples, SubstitutionPolicy(), counterfactual_only=False,
                         counterfactuals_per_question=2)
    assert result.drops[ANSWER_ONLY_IN_LONGER_NAMES] == 1 and ANSWER_ONLY_IN_LONGER_NAMES in DROP_REASONS
    assert "za" not in result.substitutes
    # "ct" keeps two "South Africa" in each of its 2 rows; "fr" is LANGUAGE, alone in its label.
    assert dict(result.skipped_partial_mentions) == {"mentions": 4, "counterfactual_rows": 2, "questions": 1}
    for row in result.rows["counterfactual"]:
        if row["id"] == "ct":
            assert row["context"] == f"South Africa and South Africa, in {row['substitute']}."


def test_normalize_answer_is_squad_normalization():
    assert normalize_answer("The  U.S.!") == "us"
    assert normalize_answer("an Apple, a day") == "apple day"


# --- substitute policies ----------------------------------------------------------------------

def substitutes_over_seeds(example, pool, policy, n=60, exclude=()):
    return {choose_substitute(example, pool, policy, random.Random(s), exclude) for s in range(n)}


def test_corpus_substitution_same_label_never_gold_never_in_context():
    examples = [make_example("a", "France", "GPE", context="Paris is in France; Spain is near."),
                make_example("b", "Spain", "GPE"), make_example("c", "the france", "GPE"),
                make_example("d", "Peru", "GPE"), make_example("e", "Chile", "GPE"),
                make_example("f", "Europe", "LOC")]
    pool = SubstitutePool(examples)
    chosen = substitutes_over_seeds(examples[0], pool, SubstitutionPolicy("corpus_substitution", "label"))
    # "Spain" is already in the context and "the france" normalizes to the gold answer.
    assert chosen == {"Peru", "Chile"}


def test_substitute_within_group_reaches_other_labels_of_the_group():
    examples = [make_example("a", "France", "GPE"), make_example("b", "Peru", "GPE"),
                make_example("c", "Europe", "LOC"), make_example("d", "1990", "DATE")]
    pool = SubstitutePool(examples)
    assert substitutes_over_seeds(examples[0], pool, SubstitutionPolicy(within="label")) == {"Peru"}
    assert substitutes_over_seeds(examples[0], pool, SubstitutionPolicy(within="group")) == {"Peru", "Europe"}


def test_type_swap_draws_from_other_groups():
    examples = [make_example("a", "France", "GPE"), make_example("b", "Peru", "GPE"),
                make_example("c", "Europe", "LOC"), make_example("d", "1990", "DATE"),
                make_example("e", "12", "CARDINAL")]
    pool = SubstitutePool(examples)
    assert substitutes_over_seeds(examples[0], pool, SubstitutionPolicy("type_swap")) == {"1990", "12"}


def test_substitute_never_contains_a_gold_answer():
    examples = [make_example("a", "York", "GPE"), make_example("b", "New York", "GPE"),
                make_example("c", "Lima", "GPE")]
    assert substitutes_over_seeds(examples[0], SubstitutePool(examples), SubstitutionPolicy()) == {"Lima"}


def test_no_substitute_when_the_pool_has_only_gold_answers():
    examples = [make_example("a", "France", "GPE"), make_example("b", "france", "GPE"),
                make_example("c", "1990", "DATE")]
    assert choose_substitute(examples[0], SubstitutePool(examples), SubstitutionPolicy(), random.Random(0)) is None


def test_policy_values_are_checked():
    with pytest.raises(ValueError, match="counterfactuals.policy"):
        SubstitutionPolicy(policy="swap_everything")
    with pytest.raises(ValueError, match="substitute_within"):
        SubstitutionPolicy(within="sentence")


def test_random_context_is_another_question_without_the_answer():
    examples = [make_example("a", "France", "GPE", context="France is in Europe."),
                make_example("b", "Spain", "GPE", context="France is next to Spain."),
                make_example("c", "Peru", "GPE", context="France is in Europe."),  # same text as a's
                make_example("d", "Chile", "GPE", context="Chile is long.")]
    donors = donor_ring(examples)
    chosen = {choose_random_context(examples[0], donors, random.Random(s)).id for s in range(40)}
    assert chosen == {"d"}
    assert choose_random_context(examples[3], donors, random.Random(0), exclude_ids=["a", "b", "c"]) is None


def test_adding_an_example_keeps_other_examples_choices():
    base = corpus(30)
    # Inserted first: every list index would shift by one.
    grown = [make_example("new", "Japan", "GPE", context="Japan is an island country.")] + base
    policy = SubstitutionPolicy()

    def choices(examples):
        pool, donors = SubstitutePool(examples), donor_ring(examples)
        return {e.id: (choose_substitute(e, pool, policy, example_rng(0, "s", e.id)),
                       choose_random_context(e, donors, example_rng(0, "r", e.id)).id) for e in base}

    before, after = choices(base), choices(grown)
    changed = [i for i in before if before[i] != after[i]]
    # Only draws that land on the newcomer's share of a ring may change.
    assert len(changed) <= len(base) // 4, changed


# --- whole splits -----------------------------------------------------------------------------

def test_split_variants_fields_and_drop_reasons():
    examples = corpus(24)
    result = build_split("train", examples, SubstitutionPolicy(), counterfactual_only=False)
    assert result.drops[UNTYPED] == 1 and result.drops[ANSWER_NOT_IN_CONTEXT] == 1
    assert result.counts() == {"factual": 26, "counterfactual": 24, "empty": 26, "random": 26}
    by_id = {e.id: e for e in examples}
    for row in result.rows["counterfactual"]:
        example = by_id[row["id"]]
        assert row["substitute"] == row["contextual_answer"] != example.answer
        assert row["parametric_answer"] == example.answer and row["answers"] == list(example.answers)
        assert not answer_in_context(row["context"], example.answers)
        assert row["context"].count(row["substitute"]) == 2  # both occurrences replaced
        assert row["answer_type"] == example.group
    for row in result.rows["factual"]:
        assert row["context"] == by_id[row["id"]].context
        assert row["contextual_answer"] == row["parametric_answer"] and row["substitute"] is None
    assert all(row["context"] == "" and row["contextual_answer"] == UNANSWERABLE for row in result.rows["empty"])
    for row in result.rows["random"]:
        example = by_id[row["id"]]
        assert row["contextual_answer"] == UNANSWERABLE
        assert row["context"] != example.context
        assert not answer_in_context(row["context"], example.answers)


def test_no_substitute_is_a_drop_reason():
    examples = [make_example("a", "France", "GPE"), make_example("b", "France", "GPE"),
                make_example("c", "1990", "DATE"), make_example("d", "1815", "DATE")]
    result = build_split("validation", examples, SubstitutionPolicy(), counterfactual_only=False)
    assert result.drops[NO_SUBSTITUTE] == 2
    assert result.counts()["counterfactual"] == 2 and result.counts()["factual"] == 4


def test_test_split_variants_share_questions():
    examples = corpus(24)
    result = build_split("test", examples, SubstitutionPolicy(), counterfactual_only=True)
    ids = [[row["id"] for row in result.rows[variant]] for variant in VARIANTS]
    assert ids[0] == ids[1] == ids[2] == ids[3]
    assert len(ids[0]) == 24 and "untyped" not in ids[0] and "absent" not in ids[0]


def test_seen_counterfactual_differs_from_train():
    train = corpus(24)
    policy = SubstitutionPolicy()
    train_variants = build_split("train", train, policy, counterfactual_only=False)
    seen, fresh = build_seen(train, train_variants, 10, policy)
    assert len(seen.substitutes) == 10 and fresh == 10
    for row in seen.rows["counterfactual"]:
        assert row["substitute"] != train_variants.substitutes[row["id"]]
    for row in seen.rows["random"]:
        assert seen.random_donors[row["id"]] != train_variants.random_donors[row["id"]]
    factual_contexts = {e.id: e.context for e in train}
    assert all(row["context"] == factual_contexts[row["id"]] for row in seen.rows["factual"])
    assert [r["id"] for r in seen.rows["empty"]] == [r["id"] for r in seen.rows["counterfactual"]]


def test_several_counterfactuals_per_training_question_use_distinct_substitutes():
    train = corpus(24)
    policy = SubstitutionPolicy()
    single = build_split("train", train, policy, counterfactual_only=False)
    triple = build_split("train", train, policy, counterfactual_only=False, counterfactuals_per_question=3)
    by_id: dict[str, list[str]] = {}
    for row in triple.rows["counterfactual"]:
        by_id.setdefault(row["id"], []).append(row["substitute"])
    assert set(by_id) == set(single.substitutes)
    for example_id, substitutes in by_id.items():
        assert len(substitutes) == 3 and len(set(substitutes)) == 3
        assert substitutes[0] == single.substitutes[example_id]   # the first draw is unchanged
    assert triple.counts()["factual"] == single.counts()["factual"]
    seen, fresh = build_seen(train, triple, 10, policy)
    # A fresh substitute avoids all three training ones; only small pools (4 continents, 4
    # years: the gold answer and three used) fall back to a training substitute.
    fresh_rows = [r for r in seen.rows["counterfactual"] if r["substitute"] not in by_id[r["id"]]]
    assert fresh == len(fresh_rows) > 0
    assert all(train[int(r["id"][1:])].label == "GPE" for r in fresh_rows)


# --- the stage --------------------------------------------------------------------------------

def write_inputs(root, examples_by_split):
    prepared, entities = root / "prepared", root / "entities"
    for directory in (prepared, entities):
        directory.mkdir(parents=True, exist_ok=True)
    for split, examples in examples_by_split.items():
        with open(prepared / f"{split}.jsonl", "wb") as handle:
            for e in examples:
                handle.write(orjson.dumps({"id": e.id, "question": e.question, "context": e.context,
                                           "answer": e.answer, "answers": list(e.answers)}) + b"\n")
        with open(entities / f"{split}.jsonl", "wb") as handle:
            for e in examples:
                handle.write(orjson.dumps({"id": e.id, "answer": e.answer, "label": e.label,
                                           "group": e.group}) + b"\n")
    (prepared / "stats.json").write_text('{"train": {"kept": 26}}')
    return prepared, entities


@pytest.fixture
def stage_inputs(tmp_path):
    splits = {split: [dataclasses.replace(e, id=f"{split}-{e.id}") for e in corpus(24)]
              for split in ("train", "validation", "test")}
    return write_inputs(tmp_path, splits)


def stage_config(seed: int = 0, seen_size: int = 6, **changes):
    cfg = config_module.load([config_module.PROJECT_ROOT / "params.yaml"])
    counterfactuals = dataclasses.replace(cfg.counterfactuals, seed=seed, seen_size=seen_size, **changes)
    return dataclasses.replace(cfg, counterfactuals=counterfactuals)


def run_stage(tmp_path, inputs, name, **config_changes):
    prepared, entities = inputs
    out, stats = tmp_path / name / "variants", tmp_path / name / "stats.json"
    counterfactuals_stage.run(stage_config(**config_changes), prepared=prepared, entities=entities,
                              out=out, stats=stats)
    return out, stats


def read_rows(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_stage_writes_every_split_and_variant_and_stats(tmp_path, stage_inputs):
    out, stats_path = run_stage(tmp_path, stage_inputs, "a", train_counterfactuals_per_question=1)
    for split in ("train", "validation", "test", "seen"):
        for variant in VARIANTS:
            assert (out / split / f"{variant}.jsonl").is_file()
    stats = orjson.loads(stats_path.read_bytes())
    assert stats["counts"]["train"] == {"factual": 26, "counterfactual": 24, "empty": 26, "random": 26}
    assert stats["counts"]["test"] == {variant: 24 for variant in VARIANTS}
    assert stats["counts"]["seen"] == {variant: 6 for variant in VARIANTS}
    assert stats["drops"]["test"] == {"untyped": 1, "answer_not_in_context": 1, "answer_only_in_longer_names": 0,
                                      "no_substitute_available": 0, "no_random_context": 0}
    assert stats["partial_mentions"] == {split: {"mentions": 0, "counterfactual_rows": 0, "questions": 0}
                                         for split in ("train", "validation", "test", "seen")}
    assert stats["answer_types"]["train"]["all"] == {"DATE": 8, "LOCATION": 17, "untyped": 1}
    assert stats["answer_types"]["train"]["counterfactual"] == {"DATE": 8, "LOCATION": 16}
    assert stats["policy"] == "corpus_substitution" and stats["seed"] == 0
    assert stats["prepare"] == {"train": {"kept": 26}}
    test_ids = [[row["id"] for row in read_rows(out / "test" / f"{v}.jsonl")] for v in VARIANTS]
    assert test_ids[0] == test_ids[1] == test_ids[2] == test_ids[3]


def test_stage_same_seed_same_bytes_other_seed_other_substitutes(tmp_path, stage_inputs):
    first, first_stats = run_stage(tmp_path, stage_inputs, "first", seed=3)
    second, second_stats = run_stage(tmp_path, stage_inputs, "second", seed=3)
    other, _ = run_stage(tmp_path, stage_inputs, "other", seed=4)
    files = sorted(p.relative_to(first) for p in first.rglob("*.jsonl"))
    assert len(files) == 16
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert first_stats.read_bytes() == second_stats.read_bytes()
    substitutes = lambda root: [r["substitute"] for r in read_rows(root / "train" / "counterfactual.jsonl")]
    assert substitutes(first) != substitutes(other)


def test_stage_rejects_prepared_rows_without_entities(tmp_path, stage_inputs):
    prepared, entities = stage_inputs
    lines = (entities / "validation.jsonl").read_bytes().splitlines()
    (entities / "validation.jsonl").write_bytes(b"\n".join(lines[:-1]) + b"\n")
    with pytest.raises(RecordError, match=r"validation\.jsonl: record 26: id 'validation-absent' has no row"):
        run_stage(tmp_path, stage_inputs, "broken")


def test_stage_rejects_a_malformed_prepared_row(tmp_path, stage_inputs):
    prepared, _ = stage_inputs
    lines = (prepared / "train.jsonl").read_bytes().splitlines()
    row = orjson.loads(lines[1])
    row["answers"] = []
    lines[1] = orjson.dumps(row)
    (prepared / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(RecordError, match=r"train\.jsonl: record 2 .*'answers' must be a non-empty list"):
        run_stage(tmp_path, stage_inputs, "broken")
