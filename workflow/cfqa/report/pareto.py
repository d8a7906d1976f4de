"""The Pareto front of methods on accuracy against cost: the methods that no other method beats
on one of the two without losing on the other. In-house: a dozen lines over a handful of
points, where a multi-objective library (pymoo, paretoset) would be a dependency for one loop."""
from __future__ import annotations

import math
from typing import Sequence

Point = tuple[str, float, float]        # (name, cost: lower is better, accuracy: higher is better)


def dominates(a: Point, b: Point) -> bool:
    """True when `a` costs no more and is no less accurate than `b`, and is strictly better on one."""
    _, cost_a, accuracy_a = a
    _, cost_b, accuracy_b = b
    return cost_a <= cost_b and accuracy_a >= accuracy_b and (cost_a < cost_b or accuracy_a > accuracy_b)


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates, by ascending cost (then name): along the front
    accuracy rises with cost. Equal points are both on the front."""
    for name, cost, accuracy in points:
        if not (math.isfinite(cost) and math.isfinite(accuracy)):
            raise ValueError(f"Pareto point {name!r}: expected finite cost and accuracy, got {cost!r}, {accuracy!r}")
    front = [p for p in points if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: (p[1], p[0]))
