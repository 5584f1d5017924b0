"""Process-wide defaults of the probes' training engine: the GPU memory budget, bfloat16 autocast, prefetch.

Named after scikit-learn's configuration: :func:`config_context` (a ``with``
block), :func:`set_config` and :func:`get_config`; :func:`training_options`,
:func:`set_training_options` and :func:`get_training_options` are the same
functions under their first names. ``fit`` reads them once, into the frozen
:class:`~skprobe.probes._plan.TrainingPlan` it trains with.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from numbers import Integral, Real

__all__ = ["TrainingOptions", "config_context", "get_config", "get_training_options", "set_config",
           "set_training_options", "training_options"]

# Share of free GPU memory the token set may take to be kept on the device when no budget is set.
_ON_DEVICE_FRACTION = 0.5
_BUDGET_ENV = "SKPROBE_DEVICE_MEMORY_BUDGET"
#: Largest budget in bytes (1 PiB): a larger number is a typo, not a memory size.
_MAX_BUDGET_BYTES = 2**50


@dataclass
class TrainingOptions:
    """Process-wide settings of the probes' training engine (see :func:`training_options`)."""

    device_memory_budget: float | int | None = None
    autocast_bf16: bool = True
    prefetch: int = 2


_OPTIONS = TrainingOptions()


def get_training_options() -> TrainingOptions:
    """The current :class:`TrainingOptions` (a copy)."""
    options = TrainingOptions(**vars(_OPTIONS))
    if options.device_memory_budget is None and os.environ.get(_BUDGET_ENV):
        options.device_memory_budget = _parse_budget(os.environ[_BUDGET_ENV])
    return options


def _parse_budget(text: str) -> float | int:
    """The budget written in ``SKPROBE_DEVICE_MEMORY_BUDGET``: a share (float) or a whole number of bytes (int)."""
    try:
        value: float | int = float(text)
    except ValueError:
        value = float("nan")
    if math.isfinite(value) and value > 1 and value.is_integer():
        value = int(value)
    return _check_budget(value, _BUDGET_ENV, f"got {text!r}", environment=True)


def _check_budget(value, name: str, got: str, environment: bool = False) -> float | int | None:
    """``value`` as a share in (0, 1] (float) or a number of bytes in [1, 2**50] (int); ValueError naming ``name``."""
    if value is None and not environment:
        return None
    if isinstance(value, Integral) and not isinstance(value, bool) and 1 <= value <= _MAX_BUDGET_BYTES:
        return int(value)
    if isinstance(value, Real) and not isinstance(value, (bool, Integral)) and 0 < value <= 1:  # False for NaN
        return float(value)
    what = "a share of free GPU memory in (0, 1]" + ("" if environment else " (float)")
    raise ValueError(f"{name} must be {'' if environment else 'None, '}{what} or a whole number of bytes from 1 "
                     f"to 2**50{'' if environment else ' (int)'}, {got}")


def set_training_options(**options) -> TrainingOptions:
    """Set training-engine options of the probes for the rest of the process; returns the previous ones.

    Same parameters as :func:`training_options`.

    Examples
    --------
    >>> previous = set_training_options(prefetch=3)
    >>> _ = set_training_options(**vars(previous))
    """
    unknown = set(options) - set(vars(_OPTIONS))
    if unknown:
        raise TypeError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(vars(_OPTIONS))}")
    if "device_memory_budget" in options:
        budget = options["device_memory_budget"]
        options["device_memory_budget"] = _check_budget(budget, "device_memory_budget", f"got {budget!r}")
    if "prefetch" in options and (not isinstance(options["prefetch"], int) or options["prefetch"] < 1):
        raise ValueError(f"prefetch must be a positive int, got {options['prefetch']!r}")
    previous = TrainingOptions(**vars(_OPTIONS))
    for name, value in options.items():
        setattr(_OPTIONS, name, value)
    return previous


class _Unchanged:
    """Default of :func:`training_options`' parameters: the option keeps its current value."""

    def __repr__(self) -> str:
        return "unchanged"


_UNCHANGED = _Unchanged()


@contextlib.contextmanager
def training_options(*, device_memory_budget: float | int | None | _Unchanged = _UNCHANGED,
                     autocast_bf16: bool | _Unchanged = _UNCHANGED, prefetch: int | _Unchanged = _UNCHANGED):
    """Set training-engine options of the probes for a ``with`` block.

    Options not given keep their current value; the defaults below are the
    process's settings until :func:`set_training_options` changes them.

    Parameters
    ----------
    device_memory_budget : float, int or None, default=None
        GPU memory the training tokens may occupy to be kept on the device
        (converted to float16 where they fit its range): a share of the free
        memory at ``fit`` time in ``(0, 1]`` (float), or a whole number of
        bytes from 1 to ``2**50`` (int); anything else (NaN, 0, negative,
        beyond these ranges) is a ``ValueError``. ``None``
        reads the environment variable ``SKPROBE_DEVICE_MEMORY_BUDGET`` (same
        meaning; it also reaches joblib's worker processes) or else uses half of
        the free memory. Tokens that do not fit are streamed from pinned host
        buffers. A budget below one batch of tokens is an error.
    autocast_bf16 : bool, default=True
        Run the heads' forward pass under bfloat16 autocast on CUDA during
        training (no effect on the CPU or at inference, which stays float32).
        On by default: it left the event-scene macro mAP within 0.0012 of
        float32 for every probe (3 seeds) and shortens the epochs; the
        measurements are in ``docs/benchmarks/training.md``.
    prefetch : int, default=2
        Batches read ahead by the streaming thread.

    Examples
    --------
    >>> from skprobe.probes import get_training_options, training_options
    >>> with training_options(device_memory_budget=0.25):
    ...     get_training_options().device_memory_budget
    0.25
    """
    given = {"device_memory_budget": device_memory_budget, "autocast_bf16": autocast_bf16, "prefetch": prefetch}
    previous = set_training_options(**{k: v for k, v in given.items() if v is not _UNCHANGED})
    try:
        yield get_training_options()
    finally:
        set_training_options(**vars(previous))



#: scikit-learn's names for the same functions (``sklearn.config_context``, ``get_config``, ``set_config``).
config_context = training_options
get_config = get_training_options
set_config = set_training_options
