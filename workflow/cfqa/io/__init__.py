"""The bottom layer: files and the terminal. Atomic writes and output locks, digests, stage
logging with credentials redacted, progress bars, timing records and bounded parameter-file
reading. Imports nothing of cfqa but `cfqa.errors`."""
