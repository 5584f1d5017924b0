"""The benchmark's prototype evidence figure on time x frequency grids and on time-only layouts."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.image import AxesImage
from sklearn.utils import Bunch

from skprobe import PrototypicalProbeClassifier, TokenLayout
from skprobe.plotting import plot_prototype_activations, prototype_activations_figure

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _case(n_time: int, n_freq: int):
    rng = np.random.default_rng(0)
    layout = TokenLayout(prefix_tokens=0, n_time=n_time, n_freq=n_freq, dim=8, hop_seconds=1.0 / n_time)
    X = rng.standard_normal((12, layout.n_tokens, 8)).astype(np.float32)
    Y = np.zeros((12, 2), dtype=int)
    Y[::2, 0] = 1
    Y[1::3, 1] = 1
    events = [[{"class": name, "onset": 0.2, "offset": 0.4} for name, on in zip(("a", "b"), row) if on] for row in Y]
    data = Bunch(X_test=[rng.standard_normal(16000).astype(np.float32) for _ in range(12)], Y_test=Y,
                 events_test=events, class_names=["a", "b"], sample_rate=16000)
    probe = PrototypicalProbeClassifier(max_iter=2, random_state=0).fit(X, Y)
    return probe, SimpleNamespace(layouts_=[layout]), X, data


def _evidence_axes(fig):
    return [ax for ax in fig.axes if ax.get_title(loc="left").startswith("prototype evidence")]


def test_time_only_layout_draws_curves_over_time():
    probe, encoder, X, data = _case(n_time=50, n_freq=1)
    fig = prototype_activations_figure(probe, encoder, X, data, n_clips=2)
    axes = _evidence_axes(fig)
    order = sorted(range(12), key=lambda i: (-data.Y_test[i].sum(), i))[:2]
    assert len(axes) == sum(int(data.Y_test[i].sum()) for i in order)
    maps = probe.class_activation_maps(X[order])
    first_class = int(np.flatnonzero(data.Y_test[order[0]])[0])
    line = axes[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), (np.arange(50) + 0.5) / 50)  # token centres, seconds
    np.testing.assert_allclose(line.get_ydata(), maps[0, :, first_class], rtol=1e-6)
    assert not any(isinstance(child, AxesImage) for ax in axes for child in ax.get_children())
    assert axes[0].get_ylabel() == "evidence"


def test_time_frequency_grid_draws_heat_maps(tmp_path):
    probe, encoder, X, data = _case(n_time=10, n_freq=4)
    fig = prototype_activations_figure(probe, encoder, X, data, n_clips=1)
    images = [c for c in _evidence_axes(fig)[0].get_children() if isinstance(c, AxesImage)]
    assert len(images) == 1 and images[0].get_array().shape == (4, 10)  # frequency x time
    path = plot_prototype_activations(probe, encoder, X, data, tmp_path / "maps.png", n_clips=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
