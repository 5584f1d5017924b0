"""TokenBatcher: batches with a runner that answers one batch late (as on CUDA) and a shared store."""

import numpy as np

from skprobe.extraction.batching import TokenBatcher


class LateRunner:
    """Returns each batch on the next submit (or flush), like DeviceRunner on CUDA."""

    def __init__(self):
        self.pending = None

    def submit(self, clips, wav):
        done = (clips, wav[:, None] * 2, np.ones(len(clips), bool), np.ones(len(clips), bool))
        previous, self.pending = self.pending, done
        return previous

    def flush(self):
        previous, self.pending = self.pending, None
        return previous


class Writer:
    """Another writer claimed ``theirs`` and died: wait() reports them as orphans once."""

    def __init__(self, theirs):
        self.theirs = set(theirs)
        self.committed = {}

    def claim(self, keys):
        mine = [k for k in keys if k not in self.theirs]
        return mine, [k for k in keys if k in self.theirs]

    def commit(self, keys, tokens):
        self.committed.update(zip(keys, np.asarray(tokens)[:, 0, 0]))

    def wait(self, keys):
        orphans = [k for k in keys if k in self.theirs]
        self.theirs -= set(orphans)
        return orphans


def run(batcher, n):
    out = []
    for i in range(n):
        out += list(batcher.add(i, f"k{i}", np.full(3, float(i), "float32"), f"X[{i}]"))
    return out + list(batcher.close())


def test_late_runner_returns_every_clip_in_order_without_a_store():
    batcher = TokenBatcher(LateRunner, 2)
    done = run(batcher, 5)
    assert [k for keys, _, _ in done for k in keys] == [f"k{i}" for i in range(5)]
    assert np.concatenate([t[:, 0, 0] for _, t, _ in done]).tolist() == [0, 2, 4, 6, 8]


def test_clips_of_a_dead_writer_are_run_and_committed_with_a_late_runner():
    writer = Writer(theirs={"k1", "k4"})
    batcher = TokenBatcher(LateRunner, 2, writer=writer, max_deferred=100)
    done = run(batcher, 5)
    assert sorted(writer.committed) == [f"k{i}" for i in range(5)]
    assert writer.committed["k4"] == 8 and writer.committed["k1"] == 2
    assert sum(n for _, _, n in done) == 5
    assert not batcher.deferred and batcher.runner.pending is None


def test_a_clip_met_twice_runs_once_with_a_store():
    writer = Writer(theirs=())
    batcher = TokenBatcher(LateRunner, 4, writer=writer)
    out = list(batcher.add(0, "a", np.zeros(3, "float32"), "X[0]"))
    out += list(batcher.add(1, "a", np.zeros(3, "float32"), "X[1]"))
    out += list(batcher.add(2, "b", None, "X[2]"))  # stored already
    out += list(batcher.close())
    assert [keys for keys, _, _ in out] == [["a"]] and list(writer.committed) == ["a"]
