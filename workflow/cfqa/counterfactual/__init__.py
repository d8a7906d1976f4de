"""Counterfactual contexts by entity substitution (Longpre et al. 2021) and the DisentQA
variants built from them. Pure functions; the `counterfactuals` stage does the I/O."""
from cfqa.counterfactual.build import (ANSWER_NOT_IN_CONTEXT, ANSWER_ONLY_IN_LONGER_NAMES, DROP_REASONS,
                                       NO_RANDOM_CONTEXT, NO_SUBSTITUTE, PARTIAL_MENTION_COUNTS, UNTYPED,
                                       SplitVariants, build_seen, build_split,
                                       counterfactual_eligibility, type_histogram)
from cfqa.counterfactual.examples import Example, RecordError, example_from_records
from cfqa.scoring.answer_metrics import normalize_answer
from cfqa.counterfactual.sampling import (POLICIES, WITHIN, SubstitutePool, SubstitutionPolicy,
                                          choose_random_context, choose_substitute, donor_ring, example_rng,
                                          stable_sample)
from cfqa.counterfactual.substitution import (MentionCounts, answer_in_context, answers_pattern, count_mentions,
                                              is_partial_mention, replace_answers, whole_mention_in_context)
from cfqa.counterfactual.variants import (counterfactual_row, empty_row, factual_row, random_row,
                                          variant_row)

__all__ = [
    "ANSWER_NOT_IN_CONTEXT", "ANSWER_ONLY_IN_LONGER_NAMES", "DROP_REASONS", "NO_RANDOM_CONTEXT", "NO_SUBSTITUTE",
    "PARTIAL_MENTION_COUNTS", "UNTYPED",
    "SplitVariants", "build_seen", "build_split", "counterfactual_eligibility", "type_histogram",
    "Example", "RecordError", "example_from_records", "normalize_answer", "POLICIES", "WITHIN",
    "SubstitutePool", "SubstitutionPolicy", "choose_random_context", "choose_substitute", "donor_ring",
    "example_rng", "stable_sample", "MentionCounts", "answer_in_context", "answers_pattern", "count_mentions",
    "is_partial_mention", "replace_answers", "whole_mention_in_context",
    "counterfactual_row", "empty_row", "factual_row", "random_row", "variant_row",
]
