"""The docs stay true: their key table is the schema's, and CI runs the README's test command."""

from __future__ import annotations

from pathlib import Path

from utils.config.template import KEYS_DOC_PATH, key_table_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_docs_key_table_is_the_schema():
    table = key_table_markdown()
    assert table in KEYS_DOC_PATH.read_text(encoding="utf-8"), \
        "docs/configuration.md's key table differs from Config: run python -m utils.config.template"
    assert "docs/configuration.md" in README


def test_ci_runs_the_readme_test_command():
    assert "make test" in README and "make demo" in README
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci.splitlines()[-1]
