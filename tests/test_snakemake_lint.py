"""`snakemake --lint` reports nothing (it exits 1 on any finding)."""
from pipeline_support import PROJECT, run_tool


def test_snakemake_lint_is_clean():
    result = run_tool(["snakemake", "--lint"], PROJECT)  # raises with the findings otherwise
    assert "Lints for" not in result.stdout + result.stderr
