"""How an answer is scored: the answer metrics (normalisation, exact match, F1, memorization
classes) and the metric registry every scorer, record, report table and MLflow key reads."""
