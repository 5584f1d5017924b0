"""normalize_tokens="auto" of the prototypical and attentive probes: the normalisation chosen on held-out clips."""

import numpy as np
import pytest

import skprobe.probes.attentive as attentive
import skprobe.probes.prototypical as prototypical
from skprobe import AttentiveProbeClassifier, PrototypicalProbeClassifier
from skprobe.datasets import make_token_scenes
from skprobe.probes._holdout import HOLDOUT_FRACTION
from skprobe.probes.prototypical import (
    NORMALIZATION_CANDIDATES,
    NORMALIZATION_MARGIN,
    NORMALIZATION_SELECTION_BATCH,
    NORMALIZATION_SELECTION_CLIPS,
)

FAST = dict(n_prototypes_per_class=4, batch_size=120, random_state=0, device="cpu")


@pytest.fixture(scope="module")
def scenes():
    """240 clips whose tokens share a strong offset along one direction (coherence far above 0.67)."""
    data = make_token_scenes(240, n_tokens=8, dim=16, n_classes=3, event_strength=5.0, random_state=0)
    return data.X + 3.0, data.y


def test_auto_chooses_on_held_out_clips_and_refits_with_the_winner(scenes):
    X, Y = scenes
    probe = PrototypicalProbeClassifier(**FAST).fit(X, Y)
    results = probe.normalization_results_
    assert results["normalize_tokens"][0] == "center"  # the direction rule's choice comes first
    assert sorted(results["normalize_tokens"]) == sorted(NORMALIZATION_CANDIDATES)
    n_holdout = round(HOLDOUT_FRACTION * len(X))
    assert results["n_holdout"] == n_holdout
    # each candidate takes the final fit's optimiser steps (at least), in batches of 8 clips
    assert results["batch_size"] == NORMALIZATION_SELECTION_BATCH == 8
    steps_per_epoch = -(-(len(X) - n_holdout) // NORMALIZATION_SELECTION_BATCH)
    assert probe.n_steps_ <= results["max_iter"] * steps_per_epoch < probe.n_steps_ + steps_per_epoch
    assert all(0 < s <= 1 for s in results["holdout_score"])
    scores = results["holdout_score"]
    challenger = 1 + int(np.argmax(scores[1:]))
    beaten = scores[challenger] > scores[0] + results["margin"]
    assert results["margin"] == NORMALIZATION_MARGIN
    assert probe.normalize_tokens_ == results["normalize_tokens"][challenger if beaten else 0]
    # the choice does not disturb the final fit: it is the fit with the chosen normalisation
    fixed = PrototypicalProbeClassifier(normalize_tokens=probe.normalize_tokens_, **FAST).fit(X, Y)
    np.testing.assert_array_equal(fixed.decision_function(X), probe.decision_function(X))


def test_the_rule_stays_unless_beaten_by_the_margin(scenes, monkeypatch):
    X, Y = scenes
    X = X + 30.0
    monkeypatch.setattr(prototypical, "NORMALIZATION_MARGIN", 1.0)  # nothing beats the rule by more than 1
    probe = PrototypicalProbeClassifier(**FAST).fit(X, Y)
    assert probe.normalize_tokens_ == probe.normalization_results_["normalize_tokens"][0] == "center"
    monkeypatch.setattr(prototypical, "NORMALIZATION_MARGIN", -1.0)  # the best held-out score among the others
    probe = PrototypicalProbeClassifier(**FAST).fit(X, Y)
    results = probe.normalization_results_
    assert probe.normalize_tokens_ == results["normalize_tokens"][1 + int(np.argmax(results["holdout_score"][1:]))]


def test_raw_tokens_lose_to_centring_when_an_offset_hides_the_events(scenes):
    X, Y = scenes
    X = X + 30.0  # an offset ten times larger: raw directions are nearly all the same
    results = PrototypicalProbeClassifier(**FAST).fit(X, Y).normalization_results_
    scores = dict(zip(results["normalize_tokens"], results["holdout_score"]))
    assert max(scores["center"], scores["standard"]) > scores["scale"] + 0.05


def test_no_choice_outside_the_bounds_or_when_fixed(scenes):
    X, Y = scenes
    low, high = NORMALIZATION_SELECTION_CLIPS
    small = PrototypicalProbeClassifier(**FAST).fit(X[: low - 1], Y[: low - 1])
    assert small.normalization_results_ is None and small.normalize_tokens_ == "center"  # the rule
    fixed = PrototypicalProbeClassifier(normalize_tokens="standard", **FAST).fit(X, Y)
    assert fixed.normalization_results_ is None and fixed.normalize_tokens_ == "standard"
    big = np.concatenate([X] * (high // len(X) + 1))
    probe = PrototypicalProbeClassifier(max_iter=1, **FAST).fit(big, np.concatenate([Y] * (high // len(X) + 1)))
    assert probe.normalization_results_ is None


ATTENTIVE = dict(batch_size=120, random_state=0, device="cpu")


def test_the_attentive_probe_checks_its_offset_rule_on_the_length_choice_split(scenes):
    X, Y = scenes  # a strong common offset: the offset rule centres
    probe = AttentiveProbeClassifier(**ATTENTIVE).fit(X, Y)
    lengths, normalization = probe.length_results_, probe.normalization_results_
    assert lengths["max_iter"] == [30, 90]
    assert normalization["normalize_tokens"] == ["center", "scale", "standard"]
    assert normalization["max_iter"] == 90 and normalization["margin"] == attentive.NORMALIZATION_MARGIN
    assert normalization["n_holdout"] == lengths["n_holdout"] == round(HOLDOUT_FRACTION * len(X))
    # the rule's score at the longest length is the same training in both results
    assert normalization["holdout_score"][0] == lengths["holdout_score"][-1]
    rule_best = max(lengths["holdout_score"])
    challenger = 1 + int(np.argmax(normalization["holdout_score"][1:]))
    if normalization["holdout_score"][challenger] > rule_best + attentive.NORMALIZATION_MARGIN:
        assert (probe.normalize_tokens_, probe.max_iter_) == (normalization["normalize_tokens"][challenger], 90)
    else:
        best = int(np.argmax(lengths["holdout_score"]))
        assert (probe.normalize_tokens_, probe.max_iter_) == ("center", lengths["max_iter"][best])
    # the choice does not disturb the final fit: it is the fit with the chosen settings
    fixed = AttentiveProbeClassifier(normalize_tokens=probe.normalize_tokens_, max_iter=probe.max_iter_,
                                     **ATTENTIVE).fit(X, Y)
    np.testing.assert_array_equal(fixed.decision_function(X), probe.decision_function(X))


def test_a_challenger_that_beats_the_attentive_rule_trains_for_the_longest_length(scenes, monkeypatch):
    X, Y = scenes
    monkeypatch.setattr(attentive, "NORMALIZATION_MARGIN", -1.0)  # the best of the challengers wins
    probe = AttentiveProbeClassifier(**ATTENTIVE).fit(X, Y)
    results = probe.normalization_results_
    winner = results["normalize_tokens"][1 + int(np.argmax(results["holdout_score"][1:]))]
    assert (probe.normalize_tokens_, probe.max_iter_, probe.n_iter_) == (winner, 90, 90)
    monkeypatch.setattr(attentive, "NORMALIZATION_MARGIN", 1.0)  # nothing beats the rule by more than 1
    assert AttentiveProbeClassifier(**ATTENTIVE).fit(X, Y).normalize_tokens_ == "center"


def test_the_attentive_probe_makes_no_normalisation_choice_outside_the_bounds_or_when_fixed(scenes):
    X, Y = scenes
    low, _ = NORMALIZATION_SELECTION_CLIPS
    small = AttentiveProbeClassifier(**ATTENTIVE).fit(X[: low - 1], Y[: low - 1])
    assert small.normalization_results_ is None and small.normalize_tokens_ == "center"
    fixed = AttentiveProbeClassifier(normalize_tokens="standard", **ATTENTIVE).fit(X, Y)
    assert fixed.normalization_results_ is None and fixed.length_results_ is not None
    probe = AttentiveProbeClassifier(max_iter=3, **ATTENTIVE).fit(X, Y)  # no length choice, still a mode choice
    assert probe.length_results_ is None and probe.normalization_results_["max_iter"] == probe.max_iter_ == 3
