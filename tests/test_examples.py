"""Every example runs (in its quick mode) and reaches a sensible result."""

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_example_is_covered():
    assert {p.stem for p in EXAMPLES.glob("*.py")} == {"grid_search_probe", "multilabel_evaluation", "custom_encoder",
                                                      "distributed_grid_search", "detect_events"}


def test_grid_search_example():
    assert load("grid_search_probe").main(quick=True) > 0.5


def test_multilabel_evaluation_example():
    results = load("multilabel_evaluation").main(quick=True)
    assert results["native prototypical"][0] > results["native linear"][0]


def test_distributed_grid_search_example():
    pytest.importorskip("distributed")
    assert load("distributed_grid_search").main(quick=True) > 0.5


def test_detect_events_example():
    pytest.importorskip("sed_scores_eval")
    metrics = load("detect_events").main(quick=True)
    assert metrics["segment_f1"] > 0.7 and metrics["event_f1"] > 0.3


def test_custom_encoder_example():
    assert load("custom_encoder").main() >= 0.7


@pytest.mark.network
@pytest.mark.slow
def test_grid_search_example_full_size_is_importable():
    # The full-size path needs the Debian sources and YAMNet weights; importing it checks its wiring.
    assert callable(load("grid_search_probe").load)
