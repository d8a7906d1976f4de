"""`python -m cfqa.dag --write dvc.yaml` regenerates dvc.yaml from the stage table;
`--check dvc.yaml` exits 1 when the file is not what the table generates; `--needs PROFILE.yaml`
prints each stage's GPU, network, memory and runtime for params.yaml with that profile over it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from cfqa.io.atomic_io import atomic_open
from cfqa.config import read_params
from cfqa.dag.dvc_yaml import render
from cfqa.dag.needs_table import markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfqa.dag", description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params.yaml: only the values of the DAG's dimensions (methods, seeds) are read")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", type=Path, metavar="DVC_YAML", help="write the generated dvc.yaml here")
    action.add_argument("--check", type=Path, metavar="DVC_YAML", help="compare this file with the generated one")
    action.add_argument("--needs", type=Path, metavar="PROFILE_PARAMS", nargs="?", const=None, default=False,
                        help="print the stages' needs (Markdown) for --params, with this params profile over it")
    args = parser.parse_args(argv)
    if args.needs is not False:
        sys.stdout.write(markdown(read_params([args.params, *([args.needs] if args.needs else [])])))
        return 0
    # Plain YAML, not cfqa.config: generating the DAG must not need a valid configuration.
    params = yaml.safe_load(args.params.read_text(encoding="utf-8"))
    text = render(params)
    if args.write:
        with atomic_open(args.write, "w") as handle:
            handle.write(text)
    elif args.check:
        if args.check.read_text(encoding="utf-8") != text:
            print(f"{args.check} is not generated from the stage table and {args.params}; "
                  f"regenerate it: python -m cfqa.dag --write {args.check}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
