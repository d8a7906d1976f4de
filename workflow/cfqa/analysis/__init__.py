"""Numbers over seeds: seed-level statistics (intervals, tests, Holm, power) and the headline
numbers built on them."""
