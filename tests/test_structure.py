"""The package's shape (issue 26's limits), measured on the source with scripts/code_stats.py: no function over
60 lines, no module over 500, no import circle, and the training layer never reaches up into inference
orchestration or the benchmarks."""

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def stats():
    return load_script("code_stats").analyse()


def test_no_function_over_60_lines(stats):
    long = [(n, name) for n, name, _ in stats["functions"] if n > 60]
    assert not long, f"functions over 60 lines (docstring included): {sorted(long, reverse=True)}"


def test_no_module_over_500_lines(stats):
    big = {m: n for m, n in stats["module_lines"].items() if n > 500}
    assert not big, f"modules over 500 lines: {big}"


def test_no_import_circles(stats):
    assert stats["cycles"] == [], f"modules that import each other (directly or round a circle): {stats['cycles']}"


def test_training_imports_neither_the_pipeline_nor_the_benchmarks(stats):
    upward = {"talking_heads.pipeline", "talking_heads.renderer", "talking_heads.live", "talking_heads.bench"}
    bad = {m: sorted(t for t in targets if t in upward or t.startswith("talking_heads.bench."))
           for m, targets in stats["graph"].items() if m.startswith("talking_heads.train")}
    assert not {m: t for m, t in bad.items() if t}, bad


def test_the_analysis_sees_what_it_should(stats, tmp_path):
    """The yardsticks themselves: a circle, a long function and a lazy import in a small fake package are found."""
    module = load_script("code_stats")
    pkg = tmp_path / "talking_heads"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    body = "\n".join(f"    x{i} = {i}" for i in range(70))
    (pkg / "b.py").write_text(f"def f():\n    from .a import g\n{body}\n")
    s = module.analyse(pkg)
    assert s["cycles"] == [["talking_heads.a", "talking_heads.b"]]
    assert max(n for n, _, _ in s["functions"]) == 72
    assert s["imports_in_functions"] == 1
    assert stats["files"] > 100  # the real package was read
