"""make test's order: the tests marked serial are collected first and must share one file, so that one xdist
worker (--dist loadfile --no-loadscope-reorder) runs them one at a time while the others run the rest."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERIAL = "import pytest\npytestmark = pytest.mark.serial\n"


def test_serial_tests_are_collected_first_and_refused_in_two_files(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest("from tests.conftest import pytest_collection_modifyitems\n")
    pytester.makeini("[pytest]\nmarkers =\n    serial: one at a time\n    cuda: a GPU\n")
    pytester.makepyfile(test_a="def test_plain():\n    pass\n", test_b=SERIAL + "def test_timed():\n    pass\n")
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    assert result.ret == 0 and result.outlines[:2] == ["test_b.py::test_timed", "test_a.py::test_plain"]
    pytester.makepyfile(test_c=SERIAL + "def test_other():\n    pass\n")
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    assert result.ret != 0 and "tests marked serial must share one file" in result.stderr.str()
