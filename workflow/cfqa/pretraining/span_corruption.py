"""T5's span-corruption objective (Raffel et al. 2020, sec. 3.1.4) as pure functions.

Written here because transformers ships it only inside a Flax example script, not as a
library function.
"""
from __future__ import annotations

import numpy as np


def random_spans_noise_mask(length: int, noise_density: float, mean_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
    """Boolean mask over `length` tokens: about noise_density of them, in spans of mean length."""
    num_noise = int(round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span_length)), 1)
    num_nonnoise = length - num_noise

    def segment(total: int, count: int) -> np.ndarray:
        # Random composition of `total` into `count` positive parts.
        count = min(count, total)
        cuts = np.sort(rng.choice(np.arange(1, total), size=count - 1, replace=False)) if count > 1 else np.array([], dtype=int)
        return np.diff(np.concatenate([[0], cuts, [total]]))

    noise = segment(num_noise, num_spans)
    nonnoise = segment(num_nonnoise, len(noise))
    noise = noise[:len(nonnoise)]
    mask = np.zeros(length, dtype=bool)
    position = 0
    for keep, drop in zip(nonnoise, noise):
        position += keep
        mask[position:position + drop] = True
        position += drop
    return mask


def corrupt(token_ids: list[int], mask: np.ndarray, sentinel_ids: list[int], eos_id: int) -> tuple[list[int], list[int]]:
    """(input, target): each noise span becomes one sentinel in the input; the target lists
    each sentinel followed by the tokens it replaced."""
    inputs, targets = [], []
    sentinel = 0
    previous_noise = False
    for token, noisy in zip(token_ids, mask):
        if noisy:
            if not previous_noise:
                inputs.append(sentinel_ids[sentinel])
                targets.append(sentinel_ids[sentinel])
                sentinel += 1
            targets.append(token)
        else:
            inputs.append(token)
        previous_noise = bool(noisy)
    return inputs + [eos_id], targets + [eos_id]
