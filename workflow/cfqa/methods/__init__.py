"""Fine-tuning methods: one module per method (the registry: cfqa.methods.registry), their
options (cfqa.methods.options) and what they share (cfqa.methods.base)."""
