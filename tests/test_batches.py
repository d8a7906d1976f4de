"""Length-grouped training batches: seeded, resumable at any micro-step, every example once
per epoch, and far less padding than random batches of the same examples."""
from __future__ import annotations

import numpy as np
import pytest

from cfqa.training.batches import (LengthGroupedBatches, batch_at, collate, fixed_sample, length_order, padding_share,
                                   training_batches)

PAD = 0


def varied_examples(count: int = 640, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Inputs of 8-96 tokens and targets of 3-40 tokens (the train stage's maximum lengths),
    each token a distinct id so an example can be told apart from any other."""
    rng = np.random.default_rng(seed)
    examples, token = [], 1
    for _ in range(count):
        source_length, target_length = int(rng.integers(8, 97)), int(rng.integers(3, 41))
        examples.append((list(range(token, token + source_length)),
                         list(range(token + source_length, token + source_length + target_length))))
        token += source_length + target_length
    return examples


def key(example) -> int:
    return example[0][0]


def padded_fraction(batches) -> float:
    real = padded = 0
    for batch in batches:
        r, p = padding_share(collate(batch, PAD), PAD)
        real, padded = real + r, padded + p
    return 1 - real / padded


def test_by_default_batches_are_consecutive_slices_of_a_seeded_permutation_per_epoch():
    examples = varied_examples(650)
    batches = LengthGroupedBatches(examples, 16, seed=5)
    for epoch in (0, 1):
        order = np.random.default_rng([5, epoch]).permutation(650)
        for position in (0, 1, 39):
            expected = [examples[i] for i in order[position * 16:(position + 1) * 16]]
            assert batches(epoch * 40 + position) == expected


@pytest.mark.parametrize("group", [1, 25])
def test_the_same_seed_gives_the_same_batches_and_another_seed_others(group):
    examples = varied_examples()
    first = [[key(e) for e in LengthGroupedBatches(examples, 16, 3, group)(i)] for i in range(100)]
    again = [[key(e) for e in LengthGroupedBatches(examples, 16, 3, group)(i)] for i in range(100)]
    other = [[key(e) for e in LengthGroupedBatches(examples, 16, 4, group)(i)] for i in range(100)]
    assert first == again and first != other


@pytest.mark.parametrize("group", [1, 25])
def test_any_micro_step_is_the_same_batch_whatever_came_before(group):
    """A resumed run asks for step k first; it must get what a run from step 0 got at step k."""
    examples = varied_examples()
    from_start = LengthGroupedBatches(examples, 16, 0, group)
    sequence = [from_start(i) for i in range(130)]     # three epochs of 40 batches and more
    for step in (0, 39, 40, 77, 129):
        assert LengthGroupedBatches(examples, 16, 0, group)(step) == sequence[step]
    assert batch_at(examples, 77, 16, 0) == LengthGroupedBatches(examples, 16, 0)(77)


def test_every_example_once_per_epoch_and_epochs_differ():
    examples = varied_examples(650)          # 40 batches of 16, 10 examples left out per epoch
    batches = LengthGroupedBatches(examples, 16, seed=0, group_batches=25)
    assert batches.per_epoch == 40
    epochs = [[key(e) for i in range(40 * n, 40 * (n + 1)) for e in batches(i)] for n in range(2)]
    for keys in epochs:
        assert len(keys) == len(set(keys)) == 640
    assert epochs[0] != epochs[1] and set(epochs[0]) != set(epochs[1])   # other examples left out


def test_fewer_examples_than_a_batch_make_one_batch():
    examples = varied_examples(5)
    batches = LengthGroupedBatches(examples, 16, seed=0)
    assert sorted(map(key, batches(0))) == sorted(map(key, examples))
    assert sorted(map(key, batches(7))) == sorted(map(key, examples))


def test_batches_are_length_sorted_chunks_of_a_random_permutation():
    examples = varied_examples()
    batches = LengthGroupedBatches(examples, 16, seed=0, group_batches=10)
    rng = np.random.default_rng([0, 0])
    permutation = rng.permutation(len(examples))
    chunks = [set(permutation[start:start + 160].tolist()) for start in range(0, 640, 160)]
    position = {key(e): i for i, e in enumerate(examples)}
    for i in range(40):
        indices = [position[key(e)] for e in batches(i)]
        assert sum(set(indices) <= chunk for chunk in chunks) == 1      # within one chunk
        lengths = [len(examples[j][0]) for j in indices]
        assert lengths == sorted(lengths)


def test_grouping_cuts_padding():
    examples = varied_examples()
    random_batches = LengthGroupedBatches(examples, 16, seed=0, group_batches=1)
    grouped = LengthGroupedBatches(examples, 16, seed=0, group_batches=25)
    before = padded_fraction(random_batches(i) for i in range(40))
    after = padded_fraction(grouped(i) for i in range(40))
    # Uniform input lengths 8-96 and targets 3-40: random batches of 16 pad 43 % of the
    # positions; sorted chunks of 400 examples leave the target lengths' spread (20 %).
    assert before > 0.38 and after < 0.25
    # Grouping reorders the epoch's examples; it neither drops nor repeats any.
    assert (sorted(key(e) for i in range(40) for e in random_batches(i))
            == sorted(key(e) for i in range(40) for e in grouped(i)))


def test_widest_is_the_first_epochs_batch_with_the_most_positions():
    examples = varied_examples()
    batches = LengthGroupedBatches(examples, 16, seed=0, group_batches=25)

    def positions(batch):
        padded = collate(batch, PAD)
        return padded["input_ids"].numel() + padded["labels"].numel()
    first_epoch = [batches(i) for i in range(batches.per_epoch)]
    assert batches.widest() in first_epoch
    assert positions(batches.widest()) == max(positions(b) for b in first_epoch)
    assert max(len(source) for source, _ in batches.widest()) == 96     # the longest input there is


def test_length_order_sorts_by_input_then_target_length_stably():
    examples = [([1, 2, 3], [1]), ([1], [1, 2]), ([1], [1]), ([1, 2, 3], [1]), ([1, 2], [1, 2, 3])]
    assert length_order(examples).tolist() == [2, 1, 4, 0, 3]
    assert length_order(examples, np.array([3, 0, 1])).tolist() == [1, 3, 0]


@pytest.mark.parametrize("size, group", [(0, 25), (16, 0)])
def test_rejects_bad_sizes(size, group):
    with pytest.raises(ValueError, match="must be >= 1"):
        LengthGroupedBatches(varied_examples(32), size, seed=0, group_batches=group)


def variant_examples(count: int = 800, seed: int = 0) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """A mixture like the training one: stratum 2 ("empty" contexts) has short inputs (8-20
    tokens), the other three long ones (40-96)."""
    rng = np.random.default_rng(seed)
    examples, strata, token = [], [], 1
    for _ in range(count):
        stratum = int(rng.integers(0, 4))
        low, high = (8, 21) if stratum == 2 else (40, 97)
        source, target = int(rng.integers(low, high)), int(rng.integers(3, 11))
        examples.append((list(range(token, token + source)), list(range(token + source, token + source + target))))
        strata.append(stratum)
        token += source + target
    return examples, strata


def test_length_grouping_makes_single_variant_batches_and_stratified_mixes_them():
    examples, strata = variant_examples()
    stratum_of = {key(e): s for e, s in zip(examples, strata)}
    samplers = {"random": training_batches(examples, 16, 0, "random", 25),
                "length": training_batches(examples, 16, 0, "length", 25),
                "stratified": training_batches(examples, 16, 0, "stratified", 25, strata)}
    mixes = {name: [len({stratum_of[key(e)] for e in sampler(i)}) for i in range(50)]
             for name, sampler in samplers.items()}
    # Sorted by length, the short stratum fills batches of its own; stratified batches hold
    # every stratum (a quarter each, 4 of 16 rows, give or take the chunk's draw).
    assert sum(m == 1 for m in mixes["length"]) >= 10
    assert all(m == 4 for m in mixes["stratified"]) and all(m >= 3 for m in mixes["random"])
    for i in range(50):
        counts = np.bincount([stratum_of[key(e)] for e in samplers["stratified"](i)], minlength=4)
        assert counts.min() >= 2
    padding = {name: padded_fraction(sampler(i) for i in range(50)) for name, sampler in samplers.items()}
    assert padding["length"] < padding["stratified"] < padding["random"]
    # Grouping reorders an epoch; it neither drops nor repeats an example.
    epoch = [sorted(key(e) for i in range(50) for e in sampler(i)) for sampler in samplers.values()]
    assert epoch[0] == epoch[1] == epoch[2]


def test_stratified_batches_take_the_same_length_quantile_of_each_variant():
    examples, strata = variant_examples()
    sampler = training_batches(examples, 16, 3, "stratified", 25, strata)
    # Within one stratum, a batch's rows are consecutive in that stratum's length order in its chunk.
    for batch in sampler.epoch_batches(0):
        for stratum in range(4):
            lengths = [len(examples[i][0]) for i in batch if strata[i] == stratum]
            assert lengths == sorted(lengths)
    resumed = training_batches(examples, 16, 3, "stratified", 25, strata)
    assert resumed(57) == sampler(57)


def test_the_batching_names_its_needs():
    examples, strata = variant_examples(64)
    # Without the variants there is one stratum: length-grouped batches.
    one_stratum = training_batches(examples, 16, 0, "stratified", 25).epoch_batches(0)
    assert [b.tolist() for b in one_stratum] == [b.tolist() for b in
                                                 training_batches(examples, 16, 0, "length", 25).epoch_batches(0)]
    with pytest.raises(ValueError, match="must label every example"):
        training_batches(examples, 16, 0, "stratified", 25, strata[:-1])
    with pytest.raises(ValueError, match="train.batching must be one of"):
        training_batches(examples, 16, 0, "sorted", 25)


def test_the_fixed_sample_is_the_same_for_every_run_and_keeps_file_order():
    examples = varied_examples(500)
    first, again = fixed_sample(examples, 100, 7), fixed_sample(examples, 100, 7)
    assert first == again and len(first) == 100 and fixed_sample(examples, 100, 8) != first
    positions = [examples.index(e) for e in first]
    assert positions == sorted(positions) and len(set(positions)) == 100
    assert fixed_sample(examples, 0, 7) == examples == fixed_sample(examples, 500, 7)
