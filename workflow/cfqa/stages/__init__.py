"""One module per pipeline stage, each with a `run(cfg, ...)` the CLI calls (cfqa.cli)."""
