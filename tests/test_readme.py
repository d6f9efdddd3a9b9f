"""The README stays true: its key table is the schema's, and CI runs the README's test command."""

from __future__ import annotations

from pathlib import Path

from utils.configuration import schema_markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_key_table_is_the_schema():
    table = schema_markdown_table()
    assert table in README, "README's configuration table differs from utils.configuration.schema_markdown_table()"


def test_ci_runs_the_readme_test_command():
    assert "make test" in README and "make demo" in README
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci.splitlines()[-1]
