"""cfqa: counterfactual question answering with T5 — context vs memory, PEFT vs full tuning."""
__version__ = "0.1.0"
