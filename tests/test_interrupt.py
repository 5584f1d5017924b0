"""Ctrl-C during ``fit``: the KeyboardInterrupt reaches the caller and the probe is left not fitted.

skorch, the training engine, catches ``KeyboardInterrupt`` in its own ``fit``
(it also uses it to stop early); a probe must not return normally, half
trained, when the user pressed Ctrl-C. The interruption is raised at chosen
points of a fit through torch's global optimiser and module hooks, the way
Python's SIGINT handler raises it in the main thread; the last test sends a
real SIGINT to ``python -m skprobe benchmark``.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from skprobe import AttentiveProbeClassifier, LinearProbeClassifier, PrototypicalProbeClassifier
from skprobe._signed import load_signed
from skprobe.datasets.synthetic import make_token_scenes
from skprobe.probes.base import ProbeNetwork

ROOT = Path(__file__).resolve().parents[1]


class CtrlC:
    """Raise ``KeyboardInterrupt`` at step ``step`` of the ``optimizer``-th optimiser a fit creates (1-based;
    ``"last"``: the last one), or at the first validation forward pass (``validation=True``); else only count."""

    def __init__(self, optimizer=None, step=1, validation=False):
        self.optimizer, self.step, self.validation = optimizer, step, validation
        self.optimizers, self.steps = [], []  # the optimisers are kept alive, so their ids stay distinct
        self.fired = False

    def __enter__(self):
        self.handles = [register_optimizer_step_pre_hook(self._on_step),
                        register_module_forward_pre_hook(self._on_forward)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def _fire(self):
        self.fired = True
        raise KeyboardInterrupt

    def _on_step(self, optimizer, args, kwargs):
        if not any(o is optimizer for o in self.optimizers):
            self.optimizers.append(optimizer)
            self.steps.append(0)
        self.steps[-1] += 1
        if self.optimizer == len(self.optimizers) and self.steps[-1] == self.step and not self.validation:
            self._fire()

    def _on_forward(self, module, args):
        if self.validation and isinstance(module, ProbeNetwork) and not module.training:
            self._fire()


@pytest.fixture(scope="module")
def tokens():
    data = make_token_scenes(200, n_tokens=4, dim=8, n_classes=3, event_strength=5.0, random_state=0)
    return data.X, data.y


CASES = {
    "linear, cv then the final fit": (lambda: LinearProbeClassifier(max_iter=2, random_state=0),
                                      [(1, 1), ("last", 3)]),
    "linear without cv": (lambda: LinearProbeClassifier(max_iter=2, cv=None, random_state=0), [(1, 1), ("last", 3)]),
    "attentive": (lambda: AttentiveProbeClassifier(max_iter=5, random_state=0), [(1, 1), ("last", 3)]),
    "prototypical": (lambda: PrototypicalProbeClassifier(max_iter=5, random_state=0), [(1, 1), ("last", 3)]),
    "prototypical with early stopping": (
        lambda: PrototypicalProbeClassifier(max_iter=100, early_stopping=True, n_iter_no_change=2, random_state=0),
        [(1, 1), ("last", 3), "validation"]),
}


def _assert_not_fitted(probe):
    with pytest.raises(NotFittedError):
        check_is_fitted(probe)
    assert sorted(vars(probe)) == sorted(probe.get_params(deep=False)), "state of the interrupted fit was left"


@pytest.mark.parametrize("case", list(CASES))
def test_ctrl_c_propagates_and_leaves_the_probe_not_fitted(tokens, case, one_torch_thread):
    X, y = tokens
    make, points = CASES[case]
    with CtrlC() as count:
        reference = make().fit(X, y)
    expected = reference.predict_proba(X)
    for point in points:
        if point == "validation":
            interrupt = CtrlC(validation=True)
        else:
            which, step = point
            interrupt = CtrlC(len(count.optimizers) if which == "last" else which, step)
        for probe in (make(), reference):  # a new probe, and a fitted one refitted
            with interrupt, pytest.raises(KeyboardInterrupt):
                probe.fit(X, y)
            assert interrupt.fired
            interrupt.fired, interrupt.optimizers, interrupt.steps = False, [], []
            _assert_not_fitted(probe)
            with pytest.raises(NotFittedError):
                probe.predict(X)
    # the interrupted fits left nothing behind: the same probe fits again to the same result
    np.testing.assert_array_equal(reference.fit(X, y).predict_proba(X), expected)


def test_early_stopping_still_stops_early(tokens, one_torch_thread):
    """skorch signals early stopping with a KeyboardInterrupt of its own: that one must still end training normally."""
    X, y = tokens
    probe = PrototypicalProbeClassifier(max_iter=100, early_stopping=True, n_iter_no_change=2, random_state=0)
    probe.fit(X, y)
    assert probe.n_iter_ < 100 and len(probe.validation_loss_curve_) == probe.n_iter_


def test_ctrl_c_during_the_attentive_length_choice(tokens, one_torch_thread):
    """200 clips and ``"auto"``: the attentive probe trains two candidate lengths and two challenger
    normalisations before its final fit."""
    X, y = tokens
    for optimizer in (1, 2, 3, 4):  # the candidate lengths, then the normalisations
        probe = AttentiveProbeClassifier(random_state=0)
        with CtrlC(optimizer, 1) as interrupt, pytest.raises(KeyboardInterrupt):
            probe.fit(X, y)
        assert interrupt.fired and len(interrupt.optimizers) == optimizer
        _assert_not_fitted(probe)


@pytest.fixture
def audio_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "clips"
    folder.mkdir()
    rows = ["file,labels"]
    for i in range(20):
        sf.write(folder / f"c{i}.wav", (0.1 * rng.normal(size=16000)).astype(np.float32), 16000)
        rows.append(f"c{i}.wav,{['low', 'high'][i % 2]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.slow
def test_benchmark_interrupted_while_training_exits_130_and_caches_nothing(tmp_path, audio_folder):
    """The linear probe finishes and is cached; Ctrl-C arrives while the prototypical probe trains."""
    home, out = tmp_path / "home", tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SKPROBE_HOME": str(home), "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # SIGABRT on a timeout dumps every thread's stack
    proc = subprocess.Popen(  # verbose=1: skorch prints a line per epoch, so we know when training runs
        [sys.executable, "-m", "skprobe", "benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder),
         "--probes", "linear,prototypical", "--seeds", "1", "--output", str(out), "--quiet",
         "--probe-params", '{"linear": {"max_iter": 2}, "prototypical": {"max_iter": 100000, "verbose": 1}}'],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # A runner started in the background (`pytest &`) ignores SIGINT, its children inherit that, and Python
        # then installs no KeyboardInterrupt handler: the child must start with SIGINT at its default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    streams = {"out": bytearray(), "err": bytearray()}
    readers = [threading.Thread(target=_drain, args=(pipe, streams[name]))
               for name, pipe in (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    deadline = time.time() + 120
    while streams["out"].count(b"\n") < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # the epoch table's header and some epochs
    assert streams["out"].count(b"\n") >= 10, (streams["out"] + streams["err"]).decode(errors="replace")
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # where it hangs: faulthandler prints the stacks to stderr
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
        for reader in readers:
            reader.join()
    text = streams["err"].decode(errors="replace")
    assert code == 130, text
    assert text.strip().splitlines()[-1] == "skprobe: interrupted"
    cached = sorted(home.glob("probes/*.joblib"))
    assert len(cached) == 1  # the finished linear fit only: nothing for the interrupted one
    assert type(load_signed(cached[0])["probe"]) is LinearProbeClassifier  # complete and verified
    assert sorted(p.name for p in (home / "probes").iterdir()) == [".hmac-key", cached[0].name]  # no temporary
    assert not (out / "results.json").exists()


def _drain(pipe, into: bytearray) -> None:
    for chunk in iter(lambda: pipe.read1(4096), b""):
        into.extend(chunk)
