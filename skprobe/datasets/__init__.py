"""Data: audio folders with label files, and benchmark sets built from Debian's recordings.

- :func:`load_audio_folder`: a folder of audio files plus a CSV of (multi-)labels, decoded into memory.
- :func:`scan_audio_folder`: the same folder as a lazy :class:`AudioDataset` (paths, nothing decoded).
- :mod:`skprobe.datasets.formats`: readers of published sets (ESC-50, FSD50K, AudioSet, DCASE /
  URBAN-SED event tables, Speech Commands), each returning an :class:`AudioDataset`.
- :func:`make_event_scenes`: polyphonic multi-label scenes of real sound events.
- :func:`make_event_clips`: the single-label control set from the same sources.
- :func:`fetch_deb`: a Debian package's files, unpacked without installing it.
- :func:`make_note_scenes`: pitched notes scattered in noise, labelled by pitch band (pitch encoders).
- :func:`make_token_scenes`: synthetic token maps with short, scattered events (tests, demos).
- :func:`make_layered_token_scenes`: the same over several layers, the labelled events in one of them.
"""

from ..packages.debian import deb_info, fetch_deb
from .folder import load_audio_folder, scan_audio_folder
from .formats import (
    FormatError,
    read_audioset,
    read_esc50,
    read_fsd50k,
    read_speech_commands,
    read_strong_labels,
    read_urban_sed,
)
from .lazy import AudioDataset, ClipPaths, Event
from .notes import make_note_scenes
from .scenes import make_event_clips, make_event_scenes, split_sources
from .sources import EVENT_CLASSES, PACKAGES, SoundSource, debian_sources
from .synthetic import make_click_waveforms, make_layered_token_scenes, make_token_scenes

__all__ = [
    "load_audio_folder",
    "scan_audio_folder",
    "AudioDataset",
    "ClipPaths",
    "Event",
    "FormatError",
    "read_esc50",
    "read_fsd50k",
    "read_audioset",
    "read_strong_labels",
    "read_urban_sed",
    "read_speech_commands",
    "make_event_scenes",
    "make_event_clips",
    "split_sources",
    "SoundSource",
    "debian_sources",
    "EVENT_CLASSES",
    "PACKAGES",
    "make_note_scenes",
    "make_token_scenes",
    "make_layered_token_scenes",
    "make_click_waveforms",
    "fetch_deb",
    "deb_info",
]
