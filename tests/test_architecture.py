"""The package's layering and import-time behaviour (issue: one home per concept)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skprobe"

# (importing package, forbidden package): encoders never depend on what uses them, probes know arrays only.
FORBIDDEN = [
    ("skprobe.encoders", "skprobe.probes"),
    ("skprobe.encoders", "skprobe.datasets"),
    ("skprobe.encoders", "skprobe.cli"),
    ("skprobe.encoders", "skprobe.benchmark"),
    ("skprobe.encoders", "skprobe.extraction"),
    ("skprobe.encoders", "skprobe.plotting"),
    ("skprobe.probes", "skprobe.encoders"),
    ("skprobe.probes", "skprobe.extraction"),
    ("skprobe.probes", "skprobe.datasets"),
    ("skprobe.probes", "skprobe.cli"),
    ("skprobe.probes", "skprobe.benchmark"),
    ("skprobe.extraction", "skprobe.probes"),
    ("skprobe.extraction", "skprobe.datasets"),
    ("skprobe.extraction", "skprobe.cli"),
    ("skprobe.extraction", "skprobe.distributed"),
    ("skprobe.encoders", "skprobe.distributed"),
    ("skprobe.probes", "skprobe.distributed"),
    ("skprobe.distributed", "skprobe.cli"),
    ("skprobe.distributed", "skprobe.benchmark"),
    ("skprobe.datasets", "skprobe.encoders"),
    ("skprobe.datasets", "skprobe.probes"),
    ("skprobe.probes", "skprobe.detection"),
    ("skprobe.encoders", "skprobe.detection"),
    ("skprobe.extraction", "skprobe.detection"),
    ("skprobe.datasets", "skprobe.detection"),
    ("skprobe.detection", "skprobe.cli"),
    ("skprobe.detection", "skprobe.benchmark"),
    # the experiment engine sits above probes, extraction and data, below the benchmark entry point and the CLI
    ("skprobe.encoders", "skprobe.experiments"),
    ("skprobe.probes", "skprobe.experiments"),
    ("skprobe.extraction", "skprobe.experiments"),
    ("skprobe.distributed", "skprobe.experiments"),
    ("skprobe.experiments", "skprobe.benchmark"),
    ("skprobe.experiments", "skprobe.cli"),
]


# (file, imported module): edges allowed only as deprecated aliases; each goes with its alias.
DEPRECATED_EDGES = {("skprobe/encoders/__init__.py", "skprobe.extraction"),
                    ("skprobe/encoders/__init__.py", "skprobe.extraction.transformer")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _dynamic_import(node: ast.AST) -> str | None:
    """The module named by ``importlib.import_module("...")``, ``import_module("...")`` or ``__import__("...")``.

    A name that is not a literal (e.g. ``import_module(table[name])``) is returned as ``"?"``
    unless every string it could be is listed in the module (see ``_literal_targets``).
    """
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in {"import_module", "__import__"}:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "?"


def _literal_targets(tree: ast.AST) -> set[str]:
    """Every string literal that names a ``skprobe`` module (the tables lazy ``__getattr__`` import from)."""
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("skprobe.")}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Absolute names of every module ``path`` imports (at any depth of the file), dynamic imports included.

    ``importlib.import_module(x)`` with a non-literal ``x`` counts as importing every ``"skprobe..."``
    string in the file (a lazy table such as ``_LAZY``).
    """
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        dynamic = _dynamic_import(node)
        if dynamic == "?":
            out += [(node.lineno, target) for target in sorted(_literal_targets(tree))]
        elif dynamic is not None:
            out.append((node.lineno, dynamic))
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return out


def _edges():
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, target in _imports(path):
            yield _module_name(path), f"{path.relative_to(PACKAGE.parent)}:{line}", target


def test_no_forbidden_import_edge():
    bad = []
    for source, where, target in _edges():
        for src, forbidden in FORBIDDEN:
            inside = source == src or source.startswith(src + ".")
            allowed = (where.rsplit(":", 1)[0], target) in DEPRECATED_EDGES
            if inside and not allowed and (target == forbidden or target.startswith(forbidden + ".")):
                bad.append(f"{where} imports {target}")
    assert not bad, "forbidden import edges:\n" + "\n".join(sorted(set(bad)))


def test_the_import_walker_sees_import_module_calls(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("import importlib\nfrom importlib import import_module\n"
                      "def f(name):\n"
                      "    importlib.import_module('skprobe.extraction.transformer')\n"
                      "    import_module('skprobe.probes')\n"
                      "    return importlib.import_module(TABLE[name])\n"
                      "TABLE = {'a': 'skprobe.cli'}\n")
    tree = ast.parse(source.read_text())
    found = {_dynamic_import(node) for node in ast.walk(tree)} - {None}
    assert found == {"skprobe.extraction.transformer", "skprobe.probes", "?"}
    assert _literal_targets(tree) == {"skprobe.extraction.transformer", "skprobe.probes", "skprobe.cli"}


def test_the_import_walker_sees_relative_imports():
    # guards the test above against passing vacuously
    targets = {t for s, _, t in _edges() if s == "skprobe.extraction.transformer"}
    assert "skprobe.encoders.registry" in targets
    assert "skprobe._torch" in targets


def _fresh_import(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=PACKAGE.parent).stdout


def test_import_skprobe_loads_nothing_heavy():
    out = _fresh_import(
        "import sys, skprobe\n"
        "heavy = ['matplotlib', 'transformers', 'torchcrepe', 'torch', 'skorch', 'sklearn', 'dask', 'distributed']\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('skprobe.encoders')))"
    )
    assert out.strip() == "[]"


def test_using_a_probe_loads_no_encoder_and_no_plotting():
    out = _fresh_import(
        "import sys, skprobe\n"
        "skprobe.LinearProbeClassifier\n"
        "print(sorted(m for m in sys.modules if m.startswith(('skprobe.encoders', 'matplotlib', "
        "'transformers', 'torchcrepe'))))"
    )
    assert out.strip() == "[]"


def test_listing_encoders_loads_no_optional_backend():
    out = _fresh_import(
        "import sys, skprobe\n"
        "skprobe.list_encoders()\n"
        "print(sorted(m.split('.')[0] for m in sys.modules if m.split('.')[0] in "
        "('matplotlib', 'transformers', 'torchcrepe')))"
    )
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", ["LinearProbeClassifier", "AttentiveProbeClassifier", "PrototypicalProbeClassifier",
                                  "FrozenEncoderTransformer", "AudioEncoder", "TokenLayout", "EncoderSpec",
                                  "register_encoder", "list_encoders", "check_encoder", "load_encoder",
                                  "fetch_weights", "metrics"])
def test_public_names_resolve(name):
    import skprobe

    assert name in skprobe.__all__
    assert name in dir(skprobe)
    assert getattr(skprobe, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    import skprobe

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        skprobe.nope  # noqa: B018


def test_moved_transformer_still_works_with_a_deprecation_warning():
    import skprobe.encoders
    from skprobe.extraction import FrozenEncoderTransformer, clear_encoder_cache

    with pytest.warns(DeprecationWarning, match="use `from skprobe.extraction import FrozenEncoderTransformer`"):
        assert skprobe.encoders.FrozenEncoderTransformer is FrozenEncoderTransformer
    with pytest.warns(DeprecationWarning, match="clear_encoder_cache"):
        assert skprobe.encoders.clear_encoder_cache is clear_encoder_cache
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        skprobe.encoders.nope  # noqa: B018


def test_deprecated_edges_are_the_only_exceptions_and_still_exist():
    edges = {(where.rsplit(":", 1)[0], target) for _, where, target in _edges()}
    assert DEPRECATED_EDGES <= edges  # an alias removed: drop its edge from the list


def test_plotting_does_not_switch_the_backend():
    out = _fresh_import(
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        "import skprobe.plotting\n"
        "print(matplotlib.get_backend())"
    )
    assert out.strip() == "svg"
