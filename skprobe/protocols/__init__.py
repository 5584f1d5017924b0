"""Evaluation protocols of published data sets: official splits, the paper's metric, its training recipe.

``skprobe benchmark --dataset fsd50k --root DIR`` runs :func:`run_protocol`:
the data set's reader (:mod:`skprobe.datasets.formats`) lists its clips
without decoding them, the files stream through the encoder into the token
store, and every probe is fitted on the official training split and scored
on the official test split by the metric the paper reports for that set
(ESC-50: five fits, one per fold). ``recipe="paper"`` trains as the paper did.

- :data:`PROTOCOLS`, :func:`get_protocol`: ``esc50``, ``fsd50k``, ``audioset-20k``, ``audioset-2m``,
  ``urban-sed``, ``speech-commands``.
- :class:`ProtocolConfig`, :func:`run_protocol`, :func:`format_protocol_table`.
"""

from .definitions import PROTOCOLS, Fold, Protocol, get_protocol
from .engine import ProtocolConfig, run_protocol, validate_protocol_config
from .recipe import PAPER_LEARNING_RATES, PAPER_RECIPE, RECIPES
from .report import format_protocol_table

__all__ = ["PROTOCOLS", "Fold", "Protocol", "get_protocol", "ProtocolConfig", "run_protocol",
           "validate_protocol_config", "format_protocol_table", "RECIPES", "PAPER_RECIPE", "PAPER_LEARNING_RATES"]
