"""Readers of published data sets, one module per format, each returning a lazy :class:`AudioDataset`.

- :func:`read_esc50`: ESC-50 (``meta/esc50.csv``, five folds).
- :func:`read_fsd50k`: FSD50K (``FSD50K.ground_truth/{dev,eval,vocabulary}.csv``).
- :func:`read_audioset`: AudioSet's segment CSVs over a folder of the user's clips.
- :func:`read_strong_labels`: a DCASE / DESED event table (``filename onset offset event_label``).
- :func:`read_urban_sed`: URBAN-SED (per-soundscape annotations, or DCASE tables).
- :func:`read_speech_commands`: Speech Commands v2 (a folder per word, split lists).

Every reader checks what it reads and raises :class:`FormatError` (a
``ValueError``) naming the file and line at fault; none decodes audio.
"""

from ._common import FormatError
from .audioset import AUDIOSET_SIZES, AUDIOSET_SUBSETS, read_audioset
from .esc50 import ESC50_SIZES, read_esc50
from .fsd50k import FSD50K_SIZES, read_fsd50k
from .speech_commands import SPEECH_COMMANDS_SIZES, read_speech_commands
from .strong import URBAN_SED_CLASSES, URBAN_SED_SIZES, read_strong_labels, read_urban_sed

__all__ = [
    "FormatError",
    "read_esc50",
    "read_fsd50k",
    "read_audioset",
    "read_strong_labels",
    "read_urban_sed",
    "read_speech_commands",
    "ESC50_SIZES",
    "FSD50K_SIZES",
    "AUDIOSET_SIZES",
    "AUDIOSET_SUBSETS",
    "URBAN_SED_SIZES",
    "URBAN_SED_CLASSES",
    "SPEECH_COMMANDS_SIZES",
]
