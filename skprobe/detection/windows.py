"""Recordings of any length as a stream: blocks read in order, resampled, cut into overlapping windows, stitched.

Nothing here holds more than a block of audio and a window of frame scores,
whatever the recording's length:

- :func:`audio_blocks` reads a file (or an in-memory array) block by block
  with soundfile, down-mixes to mono and resamples each block with a margin
  of its neighbours, so the stream equals resampling the whole recording.
- :class:`WindowPlan` places windows of the encoder's clip length every
  ``step_frames`` frames (so every window's frames fall on one global frame
  grid) and :func:`windows` cuts them from the block stream.
- :class:`FrameStitcher` averages the frame scores of overlapping windows and
  hands on each frame once no later window can cover it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import resample, to_mono_float

__all__ = ["WindowPlan", "FrameStitcher", "audio_blocks", "recording_info", "windows"]

#: Audio read per block (seconds at the file's rate).
BLOCK_SECONDS = 60.0
#: Context kept on each side of a block when resampling it (seconds): far wider than the resampling filter.
_RESAMPLE_MARGIN_SECONDS = 0.05


def recording_info(source, sample_rate: int | None = None) -> tuple[int, int]:
    """``(n_samples, sample_rate)`` of a file (from its header) or of an in-memory array at ``sample_rate``.

    Raises
    ------
    ValueError
        If the file cannot be opened as audio or holds no samples; the message names it.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"audio file not found: {path}")
        try:
            info = sf.info(str(path))
        except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
            raise ValueError(f"cannot read audio file {path}: {exc}") from None
        if info.frames <= 0:
            raise ValueError(f"audio file {path} holds no samples")
        return int(info.frames), int(info.samplerate)
    wav = np.asarray(source)
    if sample_rate is None:
        raise ValueError("an in-memory recording needs its sample_rate")
    n = wav.shape[0] if wav.ndim == 1 else max(wav.shape)
    if wav.size == 0:
        raise ValueError("the recording is empty (0 samples)")
    return int(n), int(sample_rate)


def _native_blocks(source, block: int, sample_rate: int | None) -> Iterator[np.ndarray]:
    """Mono float32 blocks of ``block`` samples at the source's own rate (the last one shorter)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with sf.SoundFile(str(source)) as fh:
                while True:
                    data = fh.read(block, dtype="float32", always_2d=True)
                    if not len(data):
                        return
                    yield to_mono_float(data.mean(axis=1), name=f"audio file {source}")
        except sf.LibsndfileError as exc:
            raise ValueError(f"cannot read audio file {source}: {exc}") from None
        return
    wav = to_mono_float(np.asarray(source), name="recording")
    for start in range(0, len(wav), block):
        yield wav[start : start + block]


def audio_blocks(source, rate: int, *, sample_rate: int | None = None,
                 block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Mono float32 blocks of a recording at ``rate``, read and resampled in order.

    Each block is resampled together with a margin of the blocks around it
    (block boundaries fall on whole periods of the rate ratio), so the
    concatenated blocks equal :func:`skprobe.audio.resample` of the whole
    recording up to float rounding, while at most three blocks are in memory.

    Parameters
    ----------
    source : path-like or array
        An audio file soundfile reads (any rate, any number of channels), or
        a waveform ``(n_samples,)`` / ``(n_samples, n_channels)``.
    rate : int
        Output rate.
    sample_rate : int, optional
        Rate of an in-memory ``source``.
    block_seconds : float, default=60
        Audio per block.

    Examples
    --------
    >>> import numpy as np
    >>> wav = np.sin(np.arange(44100 * 3) / 10.0).astype("float32")
    >>> blocks = list(audio_blocks(wav, 16000, sample_rate=44100, block_seconds=1.0))
    >>> [len(b) for b in blocks], sum(len(b) for b in blocks)
    ([16000, 16000, 16000], 48000)
    """
    _, native = recording_info(source, sample_rate)
    if native == rate:
        block = max(1, int(round(block_seconds * native)))
        yield from _native_blocks(source, block, sample_rate)
        return
    g = gcd(native, rate)
    down, up = native // g, rate // g
    block = down * max(1, math.ceil(block_seconds * native / down))
    margin = down * max(1, math.ceil(_RESAMPLE_MARGIN_SECONDS * native / down))
    stream = _native_blocks(source, block, sample_rate)
    current = next(stream, None)
    left = np.zeros(0, np.float32)
    while current is not None:
        following = next(stream, None)
        right = following[:margin] if following is not None else np.zeros(0, np.float32)
        out = resample(np.concatenate([left, current, right]), native, rate)
        start = len(left) * up // down  # exact: len(left) is a multiple of `down`
        yield np.ascontiguousarray(out[start : start + -(-len(current) * up // down)])
        left = current[-margin:] if len(current) >= margin else np.concatenate([left, current])[-margin:]
        current = following


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one recording sit and which global frames they cover.

    Window ``k`` starts at sample ``round(k * step_frames * hop_seconds * sample_rate)``
    and its frame ``t`` is the recording's frame ``k * step_frames + t``,
    which covers ``[(k * step_frames + t) * hop, ... + hop)`` seconds.

    Parameters
    ----------
    window_samples : int
    n_frames : int
        Frames per window.
    hop_seconds : float
    sample_rate : int
    overlap : float, default=0.5
        Share of a window that the next one overlaps, in ``[0, 1)``; the step
        is rounded to whole frames (at least one).

    Examples
    --------
    >>> plan = WindowPlan(16000, 24, 0.04, 16000, overlap=0.5)
    >>> plan.step_frames, plan.n_windows(40000), plan.n_total_frames(40000)
    (12, 5, 63)
    >>> [plan.start_sample(k) for k in range(5)]  # the last window's frames reach past 40000 samples
    [0, 7680, 15360, 23040, 30720]
    """

    window_samples: int
    n_frames: int
    hop_seconds: float
    sample_rate: int
    overlap: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap!r}")

    @property
    def step_frames(self) -> int:
        return max(1, int(round(self.n_frames * (1 - self.overlap))))

    @property
    def step_samples(self) -> float:
        return self.step_frames * self.hop_seconds * self.sample_rate

    def start_sample(self, k: int) -> int:
        return int(round(k * self.step_samples))

    def n_total_frames(self, n_samples: int) -> int:
        """Frames that start inside a recording of ``n_samples``."""
        return max(1, math.ceil(n_samples / (self.hop_seconds * self.sample_rate) - 1e-9))

    def n_windows(self, n_samples: int) -> int:
        """Windows needed so that every frame of the recording is covered."""
        covered = self.n_frames * self.hop_seconds * self.sample_rate  # what one window's frames span
        return max(1, math.ceil((n_samples - covered) / self.step_samples - 1e-9) + 1)


def windows(blocks: Iterator[np.ndarray], plan: WindowPlan, n_samples: int) -> Iterator[np.ndarray]:
    """The windows of :class:`WindowPlan` cut from a stream of blocks, zero-padded past the end."""
    buffer = np.zeros(0, np.float32)
    offset = 0  # sample index of buffer[0]
    blocks = iter(blocks)
    exhausted = False
    for k in range(plan.n_windows(n_samples)):
        start = plan.start_sample(k)
        stop = start + plan.window_samples
        while offset + len(buffer) < stop and not exhausted:
            block = next(blocks, None)
            if block is None:
                exhausted = True
            else:
                buffer = np.concatenate([buffer, block])
        if start > offset:  # drop what no later window needs
            buffer = buffer[start - offset :]
            offset = start
        window = buffer[: plan.window_samples]
        if len(window) < plan.window_samples:
            window = np.pad(window, (0, plan.window_samples - len(window)))
        yield window


class FrameStitcher:
    """Average the frame scores of overlapping windows; emit each frame once it is final.

    Parameters
    ----------
    plan : WindowPlan
    n_total_frames : int
        Frames of the recording; frames of the last window past its end are dropped.

    Examples
    --------
    >>> plan = WindowPlan(4, 4, 1.0, 1, overlap=0.5)  # 4 frames per window, step 2
    >>> st = FrameStitcher(plan, n_total_frames=6)
    >>> st.add(np.ones((4, 1)))
    (0, array([[1.],
           [1.]]))
    >>> st.add(3 * np.ones((4, 1)))[1].ravel().tolist()
    [2.0, 2.0]
    >>> st.finish()[1].ravel().tolist()
    [3.0, 3.0]
    """

    def __init__(self, plan: WindowPlan, n_total_frames: int) -> None:
        self.plan = plan
        self.n_total = int(n_total_frames)
        self.k = 0
        self.base = 0  # global index of the first frame not yet emitted
        self.total: np.ndarray | None = None
        self.count: np.ndarray | None = None

    def add(self, scores: np.ndarray) -> tuple[int, np.ndarray]:
        """Add the next window's scores ``(n_frames, C)``; return ``(first frame, final frames (n, C))``."""
        start = self.k * self.plan.step_frames
        if self.total is None:
            self.total = np.zeros((0, scores.shape[1]))
            self.count = np.zeros(0)
        need = start + len(scores) - self.base
        if need > len(self.total):
            grow = need - len(self.total)
            self.total = np.concatenate([self.total, np.zeros((grow, scores.shape[1]))])
            self.count = np.concatenate([self.count, np.zeros(grow)])
        a = start - self.base
        self.total[a : a + len(scores)] += scores
        self.count[a : a + len(scores)] += 1
        self.k += 1
        return self._emit(min(self.k * self.plan.step_frames, self.n_total))

    def finish(self) -> tuple[int, np.ndarray]:
        """The remaining frames (up to ``n_total_frames``)."""
        return self._emit(self.n_total)

    def _emit(self, upto: int) -> tuple[int, np.ndarray]:
        n = max(0, min(upto - self.base, len(self.total) if self.total is not None else 0))
        first = self.base
        if self.total is None or n == 0:
            return first, np.zeros((0, 0 if self.total is None else self.total.shape[1]))
        out = self.total[:n] / self.count[:n, None]
        self.total, self.count = self.total[n:], self.count[n:]
        self.base += n
        return first, out
