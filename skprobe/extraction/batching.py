"""Clips in, token batches out: the batching state of one ``transform`` or store extraction."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .pipeline import DeviceRunner
from .store import StoreWriter
from .store.writer import DeferredWriter

__all__ = ["TokenBatcher"]

Clip = tuple  # (index in X, clip key or None, waveform, name for messages)


class TokenBatcher:
    """Groups decoded clips into batches, runs them on the device, checks and commits the tokens.

    ``add`` and ``close`` yield ``(keys, tokens, n_clips)`` per finished
    batch, in the order the batches were run. With a store (``writer``
    given), a clip the store holds (its waveform is None) or one met before
    is not run, every batch is claimed before it runs and committed when it
    finishes, and a clip another writer claimed waits in ``deferred`` until
    that writer commits it (or dies, and it is run here).

    Parameters
    ----------
    make_runner : callable
        ``make_runner() -> DeviceRunner``, called once, before the first
        batch runs (it loads the encoder: nothing is loaded when every clip
        is stored).
    batch_size : int
    writer : StoreWriter or DeferredWriter, optional
    max_deferred : int
        Clips kept waiting for other writers before this one waits for some.

    Attributes
    ----------
    batch : list of Clip
        Clips waiting for the next batch.
    seen : set of str
        Keys queued by this extraction (with a writer).
    deferred : dict
        Key -> ``(index, waveform, name)`` of clips another writer is computing.
    runner : DeviceRunner or None
        Made on the first batch.
    """

    def __init__(self, make_runner: Callable[[], DeviceRunner], batch_size: int, *,
                 writer: StoreWriter | DeferredWriter | None = None, max_deferred: int = 0) -> None:
        self.make_runner = make_runner
        self.batch_size = batch_size
        self.writer = writer
        self.max_deferred = max_deferred
        self.batch: list[Clip] = []
        self.seen: set[str] = set()
        self.deferred: dict[str, tuple[int, np.ndarray, str]] = {}
        self.runner: DeviceRunner | None = None

    def add(self, index: int, key: str | None, wav: np.ndarray | None, name: str) -> Iterator[tuple]:
        """Queue one clip; yields the batches this finishes."""
        if self.writer is not None:
            if wav is None or key in self.seen or key in self.deferred:  # stored, or met before in X
                return
            self.seen.add(key)
        self.batch.append((index, key, wav, name))
        if len(self.batch) == self.batch_size:
            yield from self._flush()
        if len(self.deferred) > self.max_deferred:  # bound memory: wait for clips another writer computes
            yield from self._resolve(wait_all=False)

    def close(self) -> Iterator[tuple]:
        """Run what is queued, collect the last batch in flight and wait for every deferred clip."""
        if self.batch:
            yield from self._flush()
        if self.runner is not None:
            yield from self._finish(self.runner.flush())
        if self.deferred:
            yield from self._resolve(wait_all=True)

    def _flush(self) -> Iterator[tuple]:
        todo, self.batch = self.batch, []
        if self.writer is not None:
            mine, elsewhere = self.writer.claim([key for _, key, _, _ in todo])
            mine = set(mine)
            for index, key, wav, name in todo:
                if key not in mine and key in elsewhere:
                    self.deferred[key] = (index, wav, name)
            todo = [clip for clip in todo if clip[1] in mine]
        if todo:
            yield from self._finish(self._run(todo))

    def _run(self, clips: list[Clip]):
        if self.runner is None:
            self.runner = self.make_runner()
        return self.runner.submit(clips, np.stack([wav for _, _, wav, _ in clips]))

    def _finish(self, done) -> Iterator[tuple]:
        """Check a finished batch, commit it to the store, yield it."""
        if done is None:
            return
        clips, tokens, finite, fits = done
        for j in np.flatnonzero(~finite):
            i, _, _, name = clips[j]
            raise ValueError(f"X[{i}] ({name}): the encoder returned NaN or infinite tokens for this clip "
                             "(finite input); check its level and the encoder's precision (dtype)")
        for j in np.flatnonzero(~fits):
            i, _, _, name = clips[j]
            raise ValueError(f"X[{i}] ({name}): tokens exceed the float16 range; use store_dtype='float32' "
                             "or output_dtype='float32'")
        keys = [key for _, key, _, _ in clips]
        if self.writer is not None:
            self.writer.commit(keys, tokens)
        yield keys, tokens, len(clips)

    def _resolve(self, *, wait_all: bool) -> Iterator[tuple]:
        """Wait for clips other writers claimed; run those whose writer died.

        The batch in flight is committed first: another writer may be waiting for it.
        """
        if self.runner is not None:
            yield from self._finish(self.runner.flush())
        while self.deferred:
            keys = list(self.deferred)
            waited = keys if wait_all else keys[: max(1, len(keys) // 2)]
            orphans = self.writer.wait(waited)
            if not orphans:
                for key in waited:
                    self.deferred.pop(key, None)
                if not wait_all:
                    return
                continue
            mine, _ = self.writer.claim(orphans)
            todo = [(self.deferred[k][0], k, self.deferred[k][1], self.deferred[k][2]) for k in mine]
            for start in range(0, len(todo), self.batch_size):
                yield from self._finish(self._run(todo[start: start + self.batch_size]))
            yield from self._finish(self.runner.flush() if self.runner is not None else None)
            for key in orphans:
                self.deferred.pop(key, None)
            if not wait_all:
                return
