"""``training_options`` and ``SKPROBE_DEVICE_MEMORY_BUDGET``: every bad budget is refused, naming its source."""

import numpy as np
import pytest

from skprobe.probes import get_training_options, set_training_options, training_options


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), 1e30, 2.5, 0.0, -0.5, 0, -5, 2**60, True, "0.5",
                                    np.float64("nan")])
def test_bad_budget_is_refused(budget):
    with pytest.raises(ValueError, match=r"device_memory_budget must be None, a share of free GPU memory in "
                                         r"\(0, 1\] \(float\) or a whole number of bytes from 1 to 2\*\*50"):
        with training_options(device_memory_budget=budget):
            pass
    assert get_training_options().device_memory_budget is None  # nothing was set


@pytest.mark.parametrize("budget, expected", [(0.25, 0.25), (1.0, 1.0), (1, 1), (2_000_000_000, 2_000_000_000),
                                              (np.int64(4096), 4096), (np.float32(0.5), 0.5)])
def test_good_budget_is_kept(budget, expected):
    with training_options(device_memory_budget=budget):
        value = get_training_options().device_memory_budget
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["-5", "0", "nan", "inf", "-inf", "1e30", "1.5", "abc", ""])
def test_bad_budget_in_the_environment_names_the_variable(monkeypatch, text):
    monkeypatch.setenv("SKPROBE_DEVICE_MEMORY_BUDGET", text)
    if text == "":  # empty means unset
        assert get_training_options().device_memory_budget is None
        return
    with pytest.raises(ValueError, match=rf"SKPROBE_DEVICE_MEMORY_BUDGET must be a share of free GPU memory in "
                                         rf"\(0, 1\] or a whole number of bytes from 1 to 2\*\*50, got '{text}'"):
        get_training_options()


@pytest.mark.parametrize("text, expected", [("0.3", 0.3), ("1", 1.0), ("2e9", 2_000_000_000), ("4096", 4096)])
def test_budget_from_the_environment(monkeypatch, text, expected):
    monkeypatch.setenv("SKPROBE_DEVICE_MEMORY_BUDGET", text)
    value = get_training_options().device_memory_budget
    assert value == expected and type(value) is type(expected)


def test_set_training_options_refuses_before_changing_anything():
    with pytest.raises(ValueError, match="prefetch must be a positive int"):
        set_training_options(device_memory_budget=0.5, prefetch=0)
    assert get_training_options().device_memory_budget is None
