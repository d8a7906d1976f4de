"""Parameter files no run may start with: each case is an override file (or the bytes that make a
file unreadable) and what the one error line must say. `cfqa validate` runs them all
(tests/test_cli_errors.py); Snakemake's dry run and DVC run the ones marked for them
(tests/test_workflow_config_check.py), with the case written into params.yaml."""
from __future__ import annotations

from dataclasses import dataclass

import yaml

from cfqa.config import deep_merge

SEED_TOO_LARGE = 2 ** 32


@dataclass(frozen=True)
class BadParams:
    id: str
    text: bytes                  # an override file (YAML), or, with `whole_file`, bytes no YAML reader takes
    expected: str                # part of the one line every engine prints
    whole_file: bool = False     # the file's bytes are the fault, not one value
    engines: bool = False        # also run through `snakemake -n` and DVC (slow)

    def params_yaml(self, params: bytes) -> bytes:
        """The project's params.yaml with this case in it."""
        if self.whole_file:
            return params + b"\n" + self.text
        merged = deep_merge(yaml.safe_load(params), yaml.safe_load(self.text))
        return yaml.safe_dump(merged, sort_keys=False, allow_unicode=True).encode()


def _case(id: str, text: str, expected: str, **kwargs) -> BadParams:
    return BadParams(id, text.encode(), expected, **kwargs)


def _alias_bomb(levels: int = 9) -> bytes:
    """Nine levels of nine aliases: 432 bytes whose values, written out, are 9**9 strings."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]" for level in range(1, levels)]
    return ("\n".join(lines) + "\n").encode()


def _mapping_bomb(levels: int = 8) -> bytes:
    """The same with mappings and merge keys (`<<: *m`), which copy a mapping into another."""
    lines = ["m0: &m0 {" + ", ".join(f"k{i}: lol" for i in range(10)) + "}"]
    lines += [f"m{level}: &m{level} {{" + ", ".join(f"x{i}: *m{level - 1}" for i in range(10)) + "}"
              for level in range(1, levels)]
    return ("\n".join(lines) + "\n").encode()


DEEP = 100_000

CASES: list[BadParams] = [
    # A trailing newline passes a `^...$` pattern (Python's `$` matches before it) and splits the
    # engines' shell commands; other values leave the project or its own output folders.
    _case("run_root-trailing-newline", 'run_root: "runs/x\\n"\n', "run_root: expected a relative folder", engines=True),
    _case("run_root-space", "run_root: runs/a b\n", "run_root: expected a relative folder"),
    _case("run_root-parent", "run_root: ../elsewhere\n", "run_root: expected a relative folder"),
    _case("run_root-absolute", "run_root: /tmp/run\n", "run_root: expected a relative folder"),
    _case("run_root-inside-results", "run_root: results/x\n", "run_root: 'results/x' is ruled out here"),
    _case("compare_runs-trailing-newline", 'report: {compare_runs: ["runs/a\\n"]}\n',
          "report.compare_runs.0: expected a relative folder", engines=True),
    _case("compare_runs-absolute", "report: {compare_runs: [/abs]}\n", "report.compare_runs.0: expected a relative folder"),
    _case("method-key-trailing-newline", 'methods: {"full\\n": {method: full}}\n',
          "methods: expected a key of 1 to 64 characters on one line, got 'full\\n'", engines=True),
    _case("method-key-300-characters", "methods: {%s: {method: full}}\n" % ("x" * 300),
          "methods: expected a key of 1 to 64 characters", engines=True),
    _case("method-key-65-characters", "methods: {%s: {method: full}}\n" % ("x" * 65),
          "methods: expected a key of 1 to 64 characters"),
    _case("method-key-upper-case", "methods: {Full: {method: full}}\n", "methods: expected a method key"),
    _case("method-key-shell", "methods: {'full;rm -rf x': {method: full}}\n", "methods: expected a method key"),
    # Names, ids, URIs and paths: one line, not empty, no space at either end.
    _case("experiment-empty", "tracking: {experiment: ''}\n",
          "tracking.experiment: expected one line of text, not empty, no space at either end, got ''", engines=True),
    _case("experiment-trailing-newline", 'tracking: {experiment: "cfqa\\n"}\n', "tracking.experiment: expected one line"),
    _case("experiment-leading-space", "tracking: {experiment: ' cfqa'}\n", "tracking.experiment: expected one line"),
    _case("experiment-nul", 'tracking: {experiment: "a\\0b"}\n',
          "tracking.experiment: expected text without control characters"),
    _case("uri-empty", "tracking: {uri: ''}\n", "tracking.uri: expected one line"),
    _case("uri-trailing-newline", 'tracking: {uri: "sqlite:///mlflow.db\\n"}\n', "tracking.uri: expected one line"),
    _case("ner-empty", "entities: {ner: ''}\n", "entities.ner: expected one line"),
    _case("dataset-id-empty", "data: {huggingface: {dataset_id: ''}}\n", "data.huggingface.dataset_id: expected one line"),
    _case("dev-url-trailing-newline", 'data: {nq: {dev_urls: ["https://x.example/dev.gz\\n"]}}\n',
          "data.nq.dev_urls.0: expected one line"),
    _case("hub-id-empty", "pretrain: {hub_id: ''}\n", "pretrain.hub_id: expected null or one line"),
    _case("registry-method-empty", "methods: {full: {method: ''}}\n", "methods.full.method: expected one line"),
    _case("note-control-character", 'report: {notes: ["fine", "bell \\a"]}\n',
          "report.notes.1: expected text without control characters"),
    _case("group-key-tab", 'entities: {groups: {"PER\\tSON": [PERSON]}}\n', "entities.groups: expected a key of 1 to 64"),
    _case("key-not-text", "1: one\n", "<top>: key 1 is a int; keys are text"),
    _case("unknown-key", "report: {colour: red}\n", "report: Additional properties are not allowed ('colour'"),
    # Seeds: numpy and Python's random take [0, 2**32); larger ones used to fail only in training.
    _case("seeds-2-32", f"seeds: [{SEED_TOO_LARGE}]\n", "seeds.0: expected a seed, an integer from 0 to 2**32 - 1",
          engines=True),
    _case("seeds-negative", "seeds: [-1]\n", "seeds.0: expected a seed"),
    _case("seeds-fraction", "seeds: [1.5]\n", "seeds.0: 1.5 is not of type 'integer'"),
    _case("prepare-seed-2-32", f"prepare: {{seed: {SEED_TOO_LARGE}}}\n", "prepare.seed: expected a seed"),
    _case("world-seed-2-32", f"data: {{embedded: {{seed: {SEED_TOO_LARGE}}}}}\n", "data.embedded.seed: expected a seed"),
    _case("counterfactuals-seed-2-32", f"counterfactuals: {{seed: {SEED_TOO_LARGE}}}\n", "counterfactuals.seed: expected a seed"),
    _case("pretrain-seed-2-32", f"pretrain: {{seed: {SEED_TOO_LARGE}}}\n", "pretrain.seed: expected a seed"),
    _case("tune-seed-2-32", f"tune: {{seed: {SEED_TOO_LARGE}}}\n", "tune.seed: expected a seed"),
    _case("option-seed-2-32", f"methods: {{prompt: {{options: {{seed: {SEED_TOO_LARGE}}}}}}}\n",
          "methods.prompt.options.seed: expected a seed"),
    _case("option-seed-negative", "methods: {lst: {options: {seed: -5}}}\n", "methods.lst.options.seed: expected a seed"),
    _case("integer-beyond-64-bits", f"train: {{max_steps: {2 ** 70}}}\n", "train.max_steps: expected an integer that fits in 64 bits"),
    # Whole files: what YAML readers choke on, named as such.
    BadParams("not-utf-8", "tracking: {experiment: café}\n".encode("latin-1"),
              "not UTF-8 text: byte 0xe9 at line", whole_file=True, engines=True),
    BadParams("utf-16", "tracking: {experiment: cfqa}\n".encode("utf-16"), "not UTF-8 text: byte 0xff at line 1, column 1",
              whole_file=True),
    BadParams("100000-deep-list", b"deep: " + b"[" * DEEP + b"]" * DEEP + b"\n", "nested more than 32 levels deep",
              whole_file=True, engines=True),
    BadParams("100000-deep-mapping", b"deep: " + b"{a: " * DEEP + b"1" + b"}" * DEEP + b"\n",
              "nested more than 32 levels deep", whole_file=True),
    BadParams("alias-bomb", _alias_bomb(), "its aliases (*name) expand to more than 100,000 values",
              whole_file=True, engines=True),
    BadParams("alias-bomb-merge-keys", _mapping_bomb(), "its aliases (*name) expand to more than 100,000 values",
              whole_file=True),
    BadParams("larger-than-1-mib", b"report: {notes: [" + b"x" * (1 << 20) + b"]}\n",
              "bytes, more than the 1,048,576 a parameter file may have", whole_file=True),
    BadParams("two-documents", b"seeds: [0]\n---\nseeds: [1]\n", "not valid YAML: expected a single document",
              whole_file=True),
    BadParams("top-level-list", b"- seeds\n", "expected a mapping at the top level", whole_file=True),
]
