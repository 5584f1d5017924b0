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


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Absolute names of every module ``path`` imports (at any depth of the file)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
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
            if inside and (target == forbidden or target.startswith(forbidden + ".")):
                bad.append(f"{where} imports {target}")
    assert not bad, "forbidden import edges:\n" + "\n".join(sorted(set(bad)))


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


def test_moved_transformer_still_reachable_from_encoders():
    import skprobe.encoders
    from skprobe.extraction import FrozenEncoderTransformer

    assert skprobe.encoders.FrozenEncoderTransformer is FrozenEncoderTransformer


def test_plotting_does_not_switch_the_backend():
    out = _fresh_import(
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        "import skprobe.plotting\n"
        "print(matplotlib.get_backend())"
    )
    assert out.strip() == "svg"
