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


def test_the_readme_is_a_front_door_and_the_docs_name_no_file_outside_the_repository():
    assert len(README.splitlines()) <= 250, "README.md over 250 lines: move the detail to a page of docs/"
    pages = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "docs").glob("*.md")}
    for name, text in {"README.md": README, **pages}.items():
        for outside in ("FACTS.md", "/work/", "shared/seeds"):
            assert outside not in text, f"{name} names {outside}, which is not in the repository"
    for page in ("data", "configuration", "training", "sweeps", "after_training", "colab", "speed", "benchmarks",
                 "development"):
        assert f"docs/{page}.md" in README and f"{page}.md" in pages, page
