"""Training with the learning rate the `tune` stage chose for a method."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from cfqa.config import MethodConfig
from cfqa.contract import ResultsError, read_lr_selection


def apply_lr_selection(mcfg: MethodConfig, selection_file: Path) -> MethodConfig:
    """The method's config with `train.lr` set to the learning rate chosen in `selection_file`
    (results/{method}/lr_selection.json); a file written for another method is an error."""
    selection = read_lr_selection(selection_file, mcfg.name)
    if selection.method != mcfg.name:
        raise ResultsError(f"{selection_file}: learning rate chosen for method {selection.method!r}, "
                           f"not {mcfg.name!r}; pass results/{mcfg.name}/lr_selection.json")
    return dataclasses.replace(mcfg, train=dataclasses.replace(mcfg.train, lr=selection.chosen_lr))
