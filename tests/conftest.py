"""Shared fixtures: small seeded token sets for the probe tests."""

import numpy as np
import pytest
import torch

from skprobe.datasets.synthetic import make_token_scenes

# tests/data holds golden files and the scripts that made them (TensorFlow etc.), not tests.
collect_ignore = ["data"]


@pytest.fixture(scope="session")
def multilabel_tokens():
    """Multi-label token maps, 120 clips x 12 tokens x 16 dims, 3 classes."""
    data = make_token_scenes(120, n_tokens=12, dim=16, n_classes=3, event_strength=5.0, random_state=0)
    return data.X, data.y


@pytest.fixture(scope="session")
def multiclass_tokens():
    """Single-label token maps with string labels, 90 clips x 10 tokens x 16 dims."""
    data = make_token_scenes(90, n_tokens=10, dim=16, n_classes=3, multilabel=False, event_strength=5.0,
                             random_state=1)
    labels = np.array(["bird", "car", "dog"])[data.y]
    return data.X, labels


@pytest.fixture
def one_torch_thread():
    """Run torch single-threaded: on tiny tensors, thread synchronisation costs far more
    than it saves (tens of times slower when the machine is busy)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
