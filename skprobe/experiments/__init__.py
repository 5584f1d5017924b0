"""The experiment engine behind ``skprobe benchmark``, one module per step.

- ``config``: the probes a run can train, :class:`BenchmarkConfig` and its checks;
- ``data``: the train and test clips of a built-in set or an audio folder;
- ``tokens``: extraction through the token store, the layers of the multi-layer probe;
- ``probe_cache``: fitted probes stored signed under a key of their inputs;
- ``scoring``: class scores in the data set's order, the metrics of :mod:`skprobe.metrics`;
- ``outputs``: the JSON, CSV, plot and probe files of a run;
- ``table``: the summary as text.

:func:`skprobe.benchmark.run_benchmark` runs them in order; the names below are
also importable from :mod:`skprobe.benchmark`.
"""

from .config import BUILTIN_DATASETS, MULTI_LAYER_PROBES, PROBES, BenchmarkConfig, validate_config
from .data import load_benchmark_data
from .probe_cache import fit_or_load
from .scoring import class_scores, compute_scores
from .table import format_table
from .tokens import extract_tokens, resolve_multi_layers

__all__ = ["BUILTIN_DATASETS", "BenchmarkConfig", "MULTI_LAYER_PROBES", "PROBES", "class_scores", "compute_scores",
           "extract_tokens", "fit_or_load", "format_table", "load_benchmark_data", "resolve_multi_layers",
           "validate_config"]
