"""The attentive probe's max_iter="auto" on small sets: the length chosen on held-out clips."""

import numpy as np
import pytest
import torch
from torch import nn

from skprobe import AttentiveProbeClassifier
from skprobe.datasets import make_token_scenes
from skprobe.probes._holdout import HOLDOUT_FRACTION, holdout_choice, pick
from skprobe.probes._plan import make_plan
from skprobe.probes._tokens import TokenSource
from skprobe.probes.attentive import LENGTH_SELECTION_MIN_CLIPS

# on toy tensors torch's thread synchronisation costs far more than it saves (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scenes():
    data = make_token_scenes(240, n_tokens=8, dim=16, n_classes=3, event_strength=5.0, random_state=0)
    return data.X, data.y


def test_small_sets_choose_between_30_epochs_and_the_minimum_of_steps(scenes):
    X, Y = scenes  # 240 clips, batches of 120: 2 steps per epoch, 480 steps need more than the cap of 90 epochs
    probe = AttentiveProbeClassifier(batch_size=120, normalize_tokens="center", random_state=0).fit(X, Y)
    results = probe.length_results_
    assert results["max_iter"] == [30, 90]
    assert results["n_holdout"] == round(HOLDOUT_FRACTION * len(X))
    assert all(0 < s <= 1 for s in results["holdout_score"])
    assert probe.max_iter_ == probe.n_iter_ == results["max_iter"][int(np.argmax(results["holdout_score"]))]
    # the choice does not disturb the final fit: it is the fit at the chosen length
    fixed = AttentiveProbeClassifier(batch_size=120, normalize_tokens="center", max_iter=probe.max_iter_,
                                     random_state=0).fit(X, Y)
    np.testing.assert_array_equal(fixed.decision_function(X), probe.decision_function(X))


def test_single_label_sets_are_scored_by_one_vs_rest_average_precision(scenes):
    X, Y = scenes
    y = Y.argmax(axis=1)
    probe = AttentiveProbeClassifier(batch_size=120, random_state=0).fit(X, y)
    assert probe.length_results_["max_iter"] == [30, 90]
    assert np.isfinite(probe.length_results_["holdout_score"]).all()


@pytest.mark.parametrize("params", [{"max_iter": 5}, {"early_stopping": True, "n_iter_no_change": 1}])
def test_no_selection_when_the_length_is_not_auto(scenes, params):
    X, Y = scenes
    probe = AttentiveProbeClassifier(batch_size=120, random_state=0, **params).fit(X, Y)
    assert probe.length_results_ is None


def test_no_selection_on_tiny_or_large_sets(scenes):
    X, Y = scenes
    n = LENGTH_SELECTION_MIN_CLIPS - 1
    assert AttentiveProbeClassifier(batch_size=120, random_state=0).fit(X[:n], Y[:n]).length_results_ is None
    probe = AttentiveProbeClassifier()
    probe.max_iter_ = 30  # what max_iter="auto" gives from about 3,000 clips on: 30 epochs already reach 480 steps
    assert probe._candidate_lengths(5000) == [30]


class _Lookup(nn.Module):
    """A 'network' whose logits are one of two fixed tables, set by the training length."""

    def __init__(self, tables):
        super().__init__()
        self.tables, self.length, self.normalize = tables, None, "none"

    def calibrate(self, tokens):
        return self

    def forward(self, tokens):
        return self.tables[self.length][tokens[:, 0, 0].long()]


def test_holdout_choice_keeps_the_best_held_out_score_and_the_shorter_of_a_tie():
    n = 50
    Y = torch.from_numpy(np.random.default_rng(0).integers(0, 2, size=(n, 2)))
    tokens = TokenSource(np.arange(n, dtype=np.float32).reshape(n, 1, 1))  # each clip's token is its index
    perfect, noise = Y.float() * 2 - 1, torch.from_numpy(np.random.default_rng(1).normal(size=(n, 2))).float()

    def train(module, source, targets, plan, *, criterion, resident):
        module.length = plan.max_iter
        indices = source.take(np.arange(len(source)))[:, 0, 0].astype(int)  # the training rows
        assert len(indices) == n - round(HOLDOUT_FRACTION * n)
        np.testing.assert_array_equal(targets.numpy(), Y[indices].numpy())

    def choose(tables):
        plan = make_plan(torch.device("cpu"), batch_size=7, learning_rate=1e-3, weight_decay=0.0, max_iter=1)
        best, scores, n_holdout = holdout_choice(_Lookup(tables), tokens, None, Y, [("none", 30), ("none", 60)],
                                                 plan=plan, criterion=nn.BCEWithLogitsLoss(), n_default=2,
                                                 margin=0.0, batch_size=7, train=train)
        assert n_holdout == round(HOLDOUT_FRACTION * n)
        return best, scores

    best, scores = choose({30: noise, 60: perfect})
    assert best == 1 and scores[1] == 1.0
    assert choose({30: perfect, 60: noise})[0] == 0
    assert choose({30: perfect, 60: perfect})[0] == 0


def test_pick_keeps_the_defaults_best_unless_a_challenger_beats_it_by_the_margin():
    assert pick([0.5, 0.7], n_default=2, margin=0.05) == 1  # among the default's candidates: the best
    assert pick([0.7, 0.7], n_default=2, margin=0.05) == 0  # ties: the earlier
    assert pick([0.5, 0.6, 0.64], n_default=2, margin=0.05) == 1  # within the margin
    assert pick([0.5, 0.6, 0.66, 0.7], n_default=2, margin=0.05) == 3
    assert pick([0.5, 0.9], n_default=1, margin=0.0) == 1
    assert pick([0.5, -np.inf], n_default=1, margin=0.0) == 0
