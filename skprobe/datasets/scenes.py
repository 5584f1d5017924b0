"""Polyphonic event scenes mixed from real recordings that Debian ships.

:func:`make_event_scenes` builds a multi-label benchmark in the spirit of
URBAN-SED / DESED: each clip is an ambient bed (wind, water, fire, a drone) with
one to three sound events at random onsets and levels; short one-shots (a
snare hit, a footstep, a key press) become bursts of several hits. Train and
test draw from disjoint groups of recordings (drum kits, speakers' languages,
footstep materials, keys), so a probe cannot score by recognising a recording.
:func:`make_event_clips` builds the single-label control set: one event per
clip on the same kind of bed.

Both are deterministic given their parameters and the package versions, and
cache the result (int16 audio in a compressed ``.npz`` plus JSON metadata)
under ``<data home>/data``. See ``docs/datasets.md`` for classes, sources and
licences.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from sklearn.utils import Bunch

from ..audio import read_audio, resample
from . import _cache
from .sources import CATALOG_VERSION, EVENT_CLASSES, SoundSource, debian_sources

__all__ = ["make_event_scenes", "make_event_clips", "split_sources"]

_BUILDER_VERSION = "1"
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class _Params:
    sample_rate: int
    clip_seconds: float
    n_events: tuple[int, int]
    event_db: tuple[float, float]
    bed_db: tuple[float, float]
    burst_below: float
    burst_hits: tuple[int, int]
    max_event_seconds: float
    max_sources_per_class: int
    min_source_rate: int
    test_fraction: float
    split_seed: int


def make_event_scenes(n_train: int = 600, n_test: int = 300, *, seed: int = 0, sample_rate: int = 16000,
                      clip_seconds: float = 10.0, n_events: tuple[int, int] = (1, 3),
                      event_db: tuple[float, float] = (-30.0, -12.0), bed_db: tuple[float, float] = (-45.0, -30.0),
                      burst_below: float = 0.8, burst_hits: tuple[int, int] = (3, 8),
                      max_event_seconds: float | None = None, max_sources_per_class: int = 48,
                      min_source_rate: int = 16000, test_fraction: float = 1 / 3, split_seed: int = 0,
                      classes: Sequence[str] | None = None, sources: Sequence[SoundSource] | None = None,
                      cache: bool = True, verbose: bool = False) -> Bunch:
    """Multi-label scenes of real sound events on ambient beds (train/test split).

    Each clip: an ambient bed at a random level plus ``n_events`` events of
    distinct classes at random onsets and levels, every event entirely inside
    the clip. Sources shorter than ``burst_below`` seconds become bursts of
    ``burst_hits`` hits drawn from the same group (one kit, one material, one
    keyboard). Train and test use disjoint groups of sources.

    The default sources are 17 classes from six Debian data packages
    (:data:`~skprobe.datasets.sources.PACKAGES`, about 370 MB to download
    once, fetched with :func:`~skprobe.packages.debian.fetch_deb`). The
    scenes are built once and then loaded from the cache (build and load
    times: docs/datasets.md, "Sizes, time and cache").

    Parameters
    ----------
    n_train, n_test : int, default=600, 300
        Number of scenes per split.
    seed : int, default=0
        Seed of the scene draws; scene ``i`` does not depend on ``n_train`` / ``n_test``.
    sample_rate : int, default=16000
        Output rate; sources are resampled with :func:`skprobe.audio.resample`.
    clip_seconds : float, default=10.0
        Length of each scene.
    n_events : (int, int), default=(1, 3)
        Inclusive range of the number of events (of distinct classes) per scene.
    event_db, bed_db : (float, float)
        Ranges of the level (dB full scale, RMS over the active part) of each
        event and of the bed, drawn uniformly per scene.
    burst_below : float, default=0.8
        Sources shorter than this (seconds, after trimming silence) become bursts.
    burst_hits : (int, int), default=(3, 8)
        Inclusive range of hits per burst (fewer when the burst would exceed
        ``max_event_seconds``).
    max_event_seconds : float, optional
        Longer sources are cut to a random window of this length; default
        ``min(4.0, clip_seconds)``.
    max_sources_per_class : int, default=48
        At most this many recordings per class and split are used, taken
        round-robin over the groups.
    min_source_rate : int, default=16000
        Recordings at a lower native sample rate are skipped (telephone-band audio).
    test_fraction : float, default=1/3
        Share of each class's recordings (counted by whole groups) held out for test.
    split_seed : int, default=0
        Seed of the group split, independent of ``seed``.
    classes : sequence of str, optional
        Keep only these classes (default: all classes of the sources).
    sources : sequence of SoundSource, optional
        Use these recordings instead of the Debian ones (events have a label,
        beds ``label=None``); every class and the beds need at least two groups.
    cache : bool, default=True
        Load from / save to ``<data home>/data/event_scenes-<key>.{npz,json}``,
        the key hashing every parameter (and the sources when given).
    verbose : bool, default=False
        Print progress.

    Returns
    -------
    Bunch
        ``X_train`` / ``X_test`` float32 arrays ``(n, clip_seconds * sample_rate)``;
        ``Y_train`` / ``Y_test`` multi-hot int64 ``(n, n_classes)``; ``class_names``;
        ``events_train`` / ``events_test``: per scene a list of dicts (``class``,
        ``onset``, ``offset`` in seconds, ``level_db``, ``group``, ``sources``,
        ``n_hits``); ``beds_train`` / ``beds_test``: per scene a dict; ``split``:
        the recordings of each class per split; ``licences``: licence of each
        recording used; ``packages``: package, version, licences and copyright
        text; ``sample_rate``, ``clip_seconds``, ``params``, ``cache_path``, ``DESCR``.

    Examples
    --------
    >>> data = make_event_scenes(n_train=60, n_test=30)  # doctest: +SKIP
    >>> data.X_train.shape, data.Y_train.shape  # doctest: +SKIP
    ((60, 160000), (60, 17))
    """
    return _build_event_set("scenes", n_train, n_test, seed=seed, sources=sources, classes=classes,
                           cache=cache, verbose=verbose, params=_Params(
                               sample_rate, clip_seconds, tuple(n_events), tuple(event_db), tuple(bed_db),
                               burst_below, tuple(burst_hits), _max_event(max_event_seconds, clip_seconds),
                               max_sources_per_class,
                               min_source_rate, test_fraction, split_seed))


def make_event_clips(n_train: int = 340, n_test: int = 170, *, seed: int = 0, sample_rate: int = 16000,
                     clip_seconds: float = 10.0, event_db: tuple[float, float] = (-30.0, -12.0),
                     bed_db: tuple[float, float] = (-45.0, -30.0), burst_below: float = 0.8,
                     burst_hits: tuple[int, int] = (3, 8), max_event_seconds: float | None = None,
                     max_sources_per_class: int = 48, min_source_rate: int = 16000,
                     test_fraction: float = 1 / 3, split_seed: int = 0, classes: Sequence[str] | None = None,
                     sources: Sequence[SoundSource] | None = None, cache: bool = True,
                     verbose: bool = False) -> Bunch:
    """Single-label control set: one event per clip on an ambient bed.

    Same sources, split and mixing as :func:`make_event_scenes` (see there for
    the parameters), but every clip holds exactly one event and the classes
    are balanced (clip ``i`` has class ``i mod n_classes`` before shuffling).
    The default 340 + 170 clips give 20 + 10 clips per class.

    Returns
    -------
    Bunch
        As :func:`make_event_scenes`, plus ``y_train`` / ``y_test``: the class
        name of each clip (str arrays), consistent with ``Y_*``.

    Examples
    --------
    >>> data = make_event_clips(n_train=34, n_test=17)  # doctest: +SKIP
    >>> sorted(set(data.y_train)) == sorted(data.class_names)  # doctest: +SKIP
    True
    """
    return _build_event_set("clips", n_train, n_test, seed=seed, sources=sources, classes=classes,
                           cache=cache, verbose=verbose, params=_Params(
                               sample_rate, clip_seconds, (1, 1), tuple(event_db), tuple(bed_db), burst_below,
                               tuple(burst_hits), _max_event(max_event_seconds, clip_seconds),
                               max_sources_per_class, min_source_rate,
                               test_fraction, split_seed))


def _build_event_set(kind: str, n_train: int, n_test: int, *, params: _Params, seed: int = 0,
                    sources: Sequence[SoundSource] | None = None, classes: Sequence[str] | None = None,
                    cache: bool = True, verbose: bool = False) -> Bunch:
    """Engine of :func:`make_event_scenes` (``kind="scenes"``) and :func:`make_event_clips` (``"clips"``)."""
    _validate(kind, n_train, n_test, seed, params)
    key_params: dict[str, Any] = {
        "kind": kind, "n_train": n_train, "n_test": n_test, "seed": seed, **asdict(params),
        "classes": sorted(classes) if classes is not None else None, "builder": _BUILDER_VERSION,
        "sources": (f"debian-catalog-{CATALOG_VERSION}" if sources is None
                    else _sources_digest(sources)),
    }
    stem = _cache.data_dir() / f"event_{kind}-{_cache.cache_key(key_params)}"
    if cache:
        hit = _cache.load(stem)
        if hit is not None:
            if verbose:
                print(f"skprobe: loaded {stem}.npz", file=sys.stderr)
            return _bunch(*hit, stem)
    start = time.perf_counter()
    if sources is None:
        sources, packages = debian_sources(verbose=verbose)
    else:
        sources = list(sources)
        packages = _packages_of(sources)
    if classes is not None:
        unknown = sorted(set(classes) - {s.label for s in sources if s.label is not None})
        if unknown:
            raise ValueError(f"classes {unknown} have no sources; known: "
                             f"{sorted({s.label for s in sources if s.label is not None})}")
        sources = [s for s in sources if s.label is None or s.label in set(classes)]
    skipped: list[str] = []
    sources = _readable(sources, params.min_source_rate, skipped)
    class_names = _class_names(sources)
    splits = split_sources(sources, test_fraction=params.test_fraction, split_seed=params.split_seed)
    pool = _Pool.load(splits, class_names, params, verbose)
    pool.skipped[:0] = skipped
    used = defaultdict(set)
    for src in pool.sources():
        used[src.package].add(src.licence)
    packages = [{**p, "licences": sorted(used[p["package"]])} for p in packages if p["package"] in used]
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"kind": kind, "class_names": class_names, "params": key_params,
                            "sample_rate": params.sample_rate, "clip_seconds": params.clip_seconds,
                            "packages": packages, "split": pool.split_listing(), "licences": pool.licences(),
                            "skipped": pool.skipped}
    for split, n in zip(_SPLITS, (n_train, n_test)):
        labels = _draw_labels(kind, n, class_names, params, seed, split)
        wavs, events, beds = [], [], []
        for i in _progress(range(n), verbose, f"{kind} ({split})"):
            rng = np.random.default_rng([seed, _SPLITS.index(split), i, 7])
            wav, ev, bed = _mix_clip(rng, labels[i], split, pool, params)
            wavs.append(wav)
            events.append(ev)
            beds.append(bed)
        arrays[f"X_{split}"] = np.stack(wavs) if wavs else np.zeros((0, _n_samples(params)), np.int16)
        arrays[f"Y_{split}"] = _multi_hot(events, class_names)
        meta[f"events_{split}"] = events
        meta[f"beds_{split}"] = beds
    meta["build_seconds"] = round(time.perf_counter() - start, 2)
    if cache:
        _cache.save(stem, arrays, meta)
    return _bunch(arrays, meta, stem if cache else None)


# -- split ----------------------------------------------------------------------------------------

def split_sources(sources: Sequence[SoundSource], *, test_fraction: float = 1 / 3,
                  split_seed: int = 0) -> dict[str, list[SoundSource]]:
    """Assign whole groups of each class (and of the beds) to train or test.

    Identical files (same bytes) are dropped first, keeping the first by name.
    Per class, groups are visited from the smallest to the largest (ties in
    an order fixed by ``split_seed``); each goes to test if that brings the
    test share closer to ``test_fraction`` of the class's recordings, so test
    gets as many distinct groups as its share allows. At least one group lands
    on each side (the largest always stays in train).

    Raises
    ------
    ValueError
        If a class (or the beds) has fewer than two groups.
    """
    by_label: dict[str | None, dict[str, list[SoundSource]]] = defaultdict(lambda: defaultdict(list))
    for src in _dedupe(sources):
        by_label[src.label][src.group].append(src)
    if None not in by_label:
        raise ValueError("sources hold no ambient bed (a SoundSource with label=None)")
    out: dict[str, list[SoundSource]] = {"train": [], "test": []}
    for label, groups in by_label.items():
        what = "the ambient beds" if label is None else f"class {label!r}"
        if len(groups) < 2:
            raise ValueError(f"{what} has recordings from one group only ({next(iter(groups))!r}); "
                             "train and test need disjoint groups")
        # small groups first, so that test holds as many groups as its share allows
        order = sorted(groups, key=lambda g: (len(groups[g]), _hash(split_seed, label, g)))
        target = test_fraction * sum(len(v) for v in groups.values())
        test, n_test = [], 0
        for group in order[:-1]:  # add a group when it brings the test share closer to the target
            if abs(n_test + len(groups[group]) - target) < abs(n_test - target):
                test.append(group)
                n_test += len(groups[group])
        test = test or order[:1]
        for group in order:
            out["test" if group in test else "train"].extend(sorted(groups[group], key=lambda s: s.name))
    return out


def _readable(sources: Sequence[SoundSource], min_rate: int, skipped: list[str]) -> list[SoundSource]:
    """Sources soundfile can open, at ``min_rate`` Hz or more (checked before the split, so its shares hold)."""
    keep = []
    for src in sources:
        try:
            rate = sf.info(str(src.path)).samplerate
        except (RuntimeError, OSError, ValueError) as exc:  # soundfile's errors derive from these
            skipped.append(f"{src.name}: unreadable ({exc})")
            continue
        if rate < min_rate:
            skipped.append(f"{src.name}: sample rate {rate} < {min_rate}")
            continue
        keep.append(src)
    return keep


def _dedupe(sources: Sequence[SoundSource]) -> list[SoundSource]:
    by_size: dict[int, list[SoundSource]] = defaultdict(list)
    for src in sorted(sources, key=lambda s: s.name):
        by_size[src.path.stat().st_size if src.path.exists() else -1].append(src)
    keep = []
    for size, same in by_size.items():
        if size < 0 or len(same) == 1:
            keep.extend(same)
            continue
        seen = set()
        for src in same:
            digest = hashlib.sha1(src.path.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                keep.append(src)
    return sorted(keep, key=lambda s: s.name)


def _hash(*parts) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()


# -- loading --------------------------------------------------------------------------------------

class _Pool:
    """Loaded, trimmed and level-normalised recordings per split and class."""

    def __init__(self):
        self.events: dict[tuple[str, str], list[tuple[SoundSource, np.ndarray]]] = {}
        self.bursts: dict[tuple[str, str, str], list[tuple[SoundSource, np.ndarray]]] = defaultdict(list)
        self.beds: dict[str, list[tuple[SoundSource, np.ndarray]]] = {}
        self.skipped: list[str] = []

    @classmethod
    def load(cls, splits: dict[str, list[SoundSource]], class_names: list[str], params: _Params,
             verbose: bool) -> _Pool:
        pool = cls()
        chosen: list[tuple[str, str | None, SoundSource, np.ndarray, int]] = []
        for split in _SPLITS:
            by_label: dict[str | None, list[SoundSource]] = defaultdict(list)
            for src in splits[split]:
                by_label[src.label].append(src)
            todo = [(label, by_label[label]) for label in [*class_names, None]]
            for label, candidates in _progress(todo, verbose, f"reading sources ({split})"):
                cap = params.max_sources_per_class if label is not None else len(candidates)
                n_before = len(chosen)
                for src in _round_robin(candidates, params.split_seed):
                    if len(chosen) - n_before == cap:
                        break
                    native = pool._read(src, params)
                    if native is not None:
                        chosen.append((split, label, src, *native))
                if len(chosen) == n_before:
                    what = "ambient beds" if label is None else f"class {label!r}"
                    raise ValueError(f"no usable recording of {what} in the {split} split "
                                     f"({len(candidates)} candidates, skipped: {pool.skipped[-3:]})")
        waves = _resample_all([(wav, rate) for *_, wav, rate in chosen], params.sample_rate)
        for (split, label, src, _, _), wav in zip(chosen, waves):
            item = (src, (wav / _active_rms(wav, params.sample_rate)).astype(np.float32))
            if label is None:
                pool.beds.setdefault(split, []).append(item)
            else:
                pool.events.setdefault((split, label), []).append(item)
                pool.bursts[(split, label, src.burst_key)].append(item)
        return pool

    def _read(self, src: SoundSource, params: _Params) -> tuple[np.ndarray, int] | None:
        """Mono audio at its native rate, trimmed of leading and trailing silence; None if unusable."""
        try:
            rate = sf.info(str(src.path)).samplerate
            if rate < params.min_source_rate:
                self.skipped.append(f"{src.name}: sample rate {rate} < {params.min_source_rate}")
                return None
            wav, rate = read_audio(src.path)
        except (ValueError, RuntimeError, OSError) as exc:
            self.skipped.append(f"{src.name}: unreadable ({exc})")
            return None
        wav = _trim(wav)
        if wav.size < 0.02 * rate or np.abs(wav).max() < 1e-4:
            self.skipped.append(f"{src.name}: silent or shorter than 20 ms")
            return None
        return wav, rate

    def split_listing(self) -> dict[str, Any]:
        listing: dict[str, Any] = {split: defaultdict(list) for split in _SPLITS}
        for (split, label), items in self.events.items():
            listing[split][label] = [s.name for s, _ in items]
        for split, items in self.beds.items():
            listing[split]["<bed>"] = [s.name for s, _ in items]
        return {split: dict(v) for split, v in listing.items()}

    def sources(self) -> list[SoundSource]:
        items = [x for v in self.events.values() for x in v] + [x for v in self.beds.values() for x in v]
        return sorted((s for s, _ in items), key=lambda s: s.name)

    def licences(self) -> dict[str, str]:
        return {s.name: s.licence for s in self.sources()}


def _resample_all(items: list[tuple[np.ndarray, int]], sample_rate: int,
                  max_batch_samples: int = 1 << 22) -> list[np.ndarray]:
    """Resample many waveforms, batched per native rate (one sinc kernel per batch, not per file).

    Rows are zero-padded to the longest of their batch and cut back to the
    length :func:`skprobe.audio.resample` gives a single file, so the result
    does not depend on the batching.
    """
    out: list[np.ndarray | None] = [None] * len(items)
    by_rate: dict[int, list[int]] = defaultdict(list)
    for i, (_, rate) in enumerate(items):
        by_rate[rate].append(i)
    for rate, idx in by_rate.items():
        idx.sort(key=lambda i: items[i][0].size)
        while idx:
            longest = items[idx[0]][0].size
            take = 1
            while take < len(idx) and (take + 1) * max(longest, items[idx[take]][0].size) <= max_batch_samples:
                take += 1
            batch_idx, idx = idx[:take], idx[take:]
            width = items[batch_idx[-1]][0].size
            batch = np.zeros((len(batch_idx), width), np.float32)
            for row, i in enumerate(batch_idx):
                batch[row, :items[i][0].size] = items[i][0]
            res = resample(batch, rate, sample_rate)
            for row, i in enumerate(batch_idx):
                n = int(np.ceil(items[i][0].size * sample_rate / rate))
                out[i] = np.ascontiguousarray(res[row, :n])
    return out  # type: ignore[return-value]


def _round_robin(candidates: list[SoundSource], split_seed: int):
    groups: dict[str, list[SoundSource]] = defaultdict(list)
    for src in candidates:
        groups[src.group].append(src)
    queues = [sorted(v, key=lambda s: _hash(split_seed, s.name)) for _, v in
              sorted(groups.items(), key=lambda kv: _hash(split_seed, kv[0]))]
    for depth in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if depth < len(q):
                yield q[depth]


def _trim(wav: np.ndarray, threshold_db: float = -50.0) -> np.ndarray:
    """Drop leading and trailing samples quieter than ``threshold_db`` below the peak."""
    loud = np.flatnonzero(np.abs(wav) > np.abs(wav).max() * 10 ** (threshold_db / 20))
    return wav[loud[0]:loud[-1] + 1] if loud.size else wav[:0]


def _active_rms(wav: np.ndarray, sr: int) -> float:
    """RMS over the 20 ms frames within 30 dB of the loudest frame (the level of the sound itself)."""
    hop = max(1, int(0.02 * sr))
    n = max(1, wav.size // hop)
    frames = wav[:n * hop].reshape(n, hop) if wav.size >= hop else wav[None]
    power = (frames.astype(np.float64) ** 2).mean(axis=1)
    active = power[power >= power.max() * 1e-3]
    return float(np.sqrt(active.mean())) or 1.0


# -- mixing ---------------------------------------------------------------------------------------

def _draw_labels(kind: str, n: int, class_names: list[str], params: _Params, seed: int,
                 split: str) -> list[list[str]]:
    if kind == "clips":  # balanced: clip i gets class i mod C, in a shuffled order
        order = np.random.default_rng([seed, _SPLITS.index(split), 11]).permutation(n)
        return [[class_names[k % len(class_names)]] for k in order]
    labels = []
    lo, hi = params.n_events
    for i in range(n):
        rng = np.random.default_rng([seed, _SPLITS.index(split), i, 3])
        k = int(rng.integers(lo, min(hi, len(class_names)) + 1))
        labels.append([class_names[j] for j in sorted(rng.choice(len(class_names), k, replace=False))])
    return labels


def _mix_clip(rng: np.random.Generator, labels: list[str], split: str, pool: _Pool,
              params: _Params) -> tuple[np.ndarray, list[dict], dict]:
    sr, n = params.sample_rate, _n_samples(params)
    bed_src, bed = pool.beds[split][rng.integers(len(pool.beds[split]))]
    bed_db = rng.uniform(*params.bed_db)
    mix = _loop(bed, n, rng, int(0.05 * sr)) * 10 ** (bed_db / 20)
    events = []
    for label in labels:
        wav, names, n_hits, group = _render_event(rng, label, split, pool, params)
        onset = int(rng.integers(0, n - wav.size + 1))
        level_db = rng.uniform(*params.event_db)
        mix[onset:onset + wav.size] += wav * 10 ** (level_db / 20)
        events.append({"class": label, "onset": onset / sr, "offset": (onset + wav.size) / sr,
                       "level_db": float(level_db), "group": group, "sources": names, "n_hits": n_hits})
    peak = float(np.abs(mix).max())
    scale_db = min(0.0, 20 * np.log10(0.98 / peak)) if peak > 0 else 0.0  # avoid clipping
    mix *= 10 ** (scale_db / 20)
    for ev in events:
        ev["level_db"] = round(float(ev["level_db"] + scale_db), 2)
    events.sort(key=lambda e: (e["onset"], e["class"]))
    bed_info = {"source": bed_src.name, "group": bed_src.group, "level_db": round(float(bed_db + scale_db), 2)}
    return np.round(mix * 32767).astype(np.int16), events, bed_info


def _render_event(rng: np.random.Generator, label: str, split: str, pool: _Pool,
                  params: _Params) -> tuple[np.ndarray, list[str], int, str]:
    sr = params.sample_rate
    items = pool.events[(split, label)]
    src, wav = items[rng.integers(len(items))]
    max_len = int(params.max_event_seconds * sr)
    if wav.size < params.burst_below * sr:
        mates = pool.bursts[(split, label, src.burst_key)]
        n_hits = int(rng.integers(params.burst_hits[0], params.burst_hits[1] + 1))
        ioi = rng.uniform(0.15, 0.5) * sr  # mean inter-onset interval of this burst
        hits, t = [(0, src, wav)], 0.0
        for _ in range(n_hits - 1):
            t += ioi * rng.uniform(0.8, 1.2)
            mate, mate_wav = mates[rng.integers(len(mates))]
            if int(t) + mate_wav.size > max_len:
                break
            hits.append((int(t), mate, mate_wav))
        out = np.zeros(max(o + w.size for o, _, w in hits), np.float32)
        for o, _, w in hits:
            out[o:o + w.size] += w * 10 ** (rng.uniform(-3, 3) / 20)
        return out, [s.name for _, s, _ in hits], len(hits), src.group
    if wav.size > max_len:  # a random window, faded in and out over 10 ms
        start = int(rng.integers(0, wav.size - max_len + 1))
        wav = wav[start:start + max_len].copy()
        fade = np.linspace(0.0, 1.0, int(0.01 * sr), dtype=np.float32)
        wav[:fade.size] *= fade
        wav[-fade.size:] *= fade[::-1]
    return wav, [src.name], 1, src.group


def _loop(wav: np.ndarray, n: int, rng: np.random.Generator, crossfade: int) -> np.ndarray:
    """``n`` samples of ``wav`` looped with linear cross-fades, from a random start."""
    if wav.size >= n:
        start = int(rng.integers(0, wav.size - n + 1))
        return wav[start:start + n].astype(np.float64)
    xf = min(crossfade, wav.size // 4)
    reps = int(np.ceil((2 * n + wav.size) / max(1, wav.size - xf))) + 1
    out = np.zeros((reps - 1) * (wav.size - xf) + wav.size, np.float64)
    ramp = np.linspace(0.0, 1.0, xf) if xf else np.zeros(0)
    for r in range(reps):
        seg = wav.astype(np.float64)
        if xf:
            seg = seg.copy()
            if r > 0:
                seg[:xf] *= ramp
            seg[-xf:] *= ramp[::-1]
        pos = r * (wav.size - xf)
        out[pos:pos + wav.size] += seg
    start = int(rng.integers(0, min(wav.size, out.size - n) + 1))
    return out[start:start + n]


def _multi_hot(events: list[list[dict]], class_names: list[str]) -> np.ndarray:
    Y = np.zeros((len(events), len(class_names)), np.int64)
    index = {c: j for j, c in enumerate(class_names)}
    for i, evs in enumerate(events):
        for ev in evs:
            Y[i, index[ev["class"]]] = 1
    return Y


# -- helpers --------------------------------------------------------------------------------------

def _max_event(max_event_seconds: float | None, clip_seconds: float) -> float:
    return min(4.0, clip_seconds) if max_event_seconds is None else max_event_seconds


def _n_samples(params: _Params) -> int:
    return int(round(params.clip_seconds * params.sample_rate))


def _class_names(sources: Sequence[SoundSource]) -> list[str]:
    labels = {s.label for s in sources if s.label is not None}
    known = [c for c in EVENT_CLASSES if c in labels]
    return known + sorted(labels - set(known))


def _sources_digest(sources: Sequence[SoundSource]) -> str:
    h = hashlib.sha1()
    for s in sorted(sources, key=lambda s: s.name):
        stat = s.path.stat() if s.path.exists() else None
        h.update(repr((s.name, str(s.path), s.label, s.group, s.burst_group,
                       stat.st_size if stat else None, stat.st_mtime_ns if stat else None)).encode())
    return h.hexdigest()


def _packages_of(sources: Sequence[SoundSource]) -> list[dict]:
    by_package: dict[str, set[str]] = defaultdict(set)
    for s in sources:
        by_package[s.package].add(s.licence)
    return [{"package": p, "version": None, "licences": sorted(v), "copyright": None}
            for p, v in sorted(by_package.items())]


def _validate(kind: str, n_train: int, n_test: int, seed: int, p: _Params) -> None:
    if kind not in ("scenes", "clips"):
        raise ValueError(f"kind must be 'scenes' or 'clips', got {kind!r}")
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(p.sample_rate, (int, np.integer)) or p.sample_rate < 1000:
        raise ValueError(f"sample_rate must be an int >= 1000, got {p.sample_rate!r}")
    if not p.clip_seconds > 0:
        raise ValueError(f"clip_seconds must be positive, got {p.clip_seconds!r}")
    if not 0 < p.max_event_seconds <= p.clip_seconds:
        raise ValueError(f"max_event_seconds must be in (0, clip_seconds={p.clip_seconds}], "
                         f"got {p.max_event_seconds!r}")
    if not 0 <= p.burst_below < p.max_event_seconds:
        raise ValueError(f"burst_below must be in [0, max_event_seconds), got {p.burst_below!r}")
    for name, (lo, hi) in (("n_events", p.n_events), ("burst_hits", p.burst_hits)):
        if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer)) and 1 <= lo <= hi):
            raise ValueError(f"{name} must be a pair of ints 1 <= low <= high, got {(lo, hi)!r}")
    for name, (lo, hi) in (("event_db", p.event_db), ("bed_db", p.bed_db)):
        if not lo <= hi <= 0:
            raise ValueError(f"{name} must be a pair low <= high <= 0 (dB full scale), got {(lo, hi)!r}")
    if not 0 < p.test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {p.test_fraction!r}")
    if p.max_sources_per_class < 1:
        raise ValueError(f"max_sources_per_class must be >= 1, got {p.max_sources_per_class!r}")


def _progress(items, verbose: bool, desc: str):
    if not verbose:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=f"skprobe: {desc}", leave=False)


def _bunch(arrays: dict[str, np.ndarray], meta: dict[str, Any], stem: Path | None) -> Bunch:
    out = Bunch(class_names=list(meta["class_names"]), sample_rate=meta["sample_rate"],
                clip_seconds=meta["clip_seconds"], params=meta["params"], packages=meta["packages"],
                split=meta["split"], licences=meta["licences"], skipped=meta.get("skipped", []),
                cache_path=None if stem is None else stem.with_suffix(".npz"),
                build_seconds=meta.get("build_seconds"))
    for split in _SPLITS:
        out[f"X_{split}"] = arrays[f"X_{split}"].astype(np.float32) / 32768.0
        out[f"Y_{split}"] = arrays[f"Y_{split}"].astype(np.int64)
        out[f"events_{split}"] = meta[f"events_{split}"]
        out[f"beds_{split}"] = meta[f"beds_{split}"]
        if meta["kind"] == "clips":
            out[f"y_{split}"] = np.array([evs[0]["class"] for evs in meta[f"events_{split}"]], dtype=str)
    out["DESCR"] = _describe(meta)
    return out


def _describe(meta: dict[str, Any]) -> str:
    p = meta["params"]
    what = ("multi-label scenes" if meta["kind"] == "scenes" else "single-label clips (control set)")
    pk = ", ".join(f"{d['package']} {d['version'] or ''}".strip() for d in meta["packages"])
    return (f"skprobe event {what}: {p['n_train']} train / {p['n_test']} test clips of "
            f"{meta['clip_seconds']} s at {meta['sample_rate']} Hz, {len(meta['class_names'])} classes "
            f"({', '.join(meta['class_names'])}). Events on ambient beds; train and test use disjoint groups "
            f"of recordings. Sources: {pk}. Licences per recording in `licences`.")
