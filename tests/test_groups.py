"""``fit(X, y, groups=...)`` in every probe: the splits ``fit`` makes keep a group on one side."""

import numpy as np
import pytest

import skprobe.probes._holdout as holdout
import skprobe.probes._training as training
from skprobe import AttentiveProbeClassifier, LinearProbeClassifier, PrototypicalProbeClassifier
from skprobe.datasets import make_token_scenes
from skprobe.probes._training import held_out_size, validation_split
from skprobe.probes.convex_gated import ConvexGatedProbeClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scenes():
    data = make_token_scenes(240, n_tokens=8, dim=16, n_classes=3, event_strength=5.0, random_state=0)
    return data.X, data.y


def _disjoint(groups, split):
    kept, held = split
    return not set(groups[kept]) & set(groups[held])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("sizes", [[10] * 12, [1, 2, 3, 50, 4, 5, 30, 7], [3, 97]])
def test_group_split_holds_out_whole_groups_of_at_least_the_fraction(seed, sizes):
    groups = np.repeat([f"rec{i}" for i in range(len(sizes))], sizes)
    n = len(groups)
    kept, held = validation_split(n, 0.2, None, seed, groups)
    assert _disjoint(groups, (kept, held))
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(n))
    assert len(held) >= held_out_size(n, 0.2) or len(set(groups[held])) == len(sizes) - 1
    assert len(set(groups[kept])) >= 1
    again = validation_split(n, 0.2, None, seed, groups)
    assert all(np.array_equal(a, b) for a, b in zip((kept, held), again))  # drawn from the seed


def test_group_split_differs_between_seeds_and_from_the_plain_split():
    groups = np.repeat(np.arange(20), 5)
    splits = {tuple(validation_split(100, 0.2, None, seed, groups)[1]) for seed in range(6)}
    assert len(splits) > 1
    plain = validation_split(100, 0.2, None, 0)
    assert not _disjoint(groups, plain)  # a random split cuts through the groups


def test_a_single_group_is_refused_by_name():
    with pytest.raises(ValueError, match=r"groups holds one group \('a'\).*at least 2 groups"):
        validation_split(10, 0.2, None, 0, np.array(["a"] * 10))


def _recording(monkeypatch, module):
    """Record every split ``module.validation_split`` returns, with the groups it was given."""
    seen = []

    def spy(n, fraction, stratify, seed, groups=None):
        split = validation_split(n, fraction, stratify, seed, groups)
        seen.append((groups, split))
        return split

    monkeypatch.setattr(module, "validation_split", spy)
    return seen


@pytest.mark.parametrize("cls", [AttentiveProbeClassifier, PrototypicalProbeClassifier])
def test_held_out_choice_holds_out_whole_groups(monkeypatch, scenes, cls):
    X, Y = scenes
    groups = np.arange(len(X)) // 12  # 20 recordings of 12 clips
    seen = _recording(monkeypatch, holdout)
    params = {"batch_size": 120} if cls is AttentiveProbeClassifier else {"max_iter": 2}
    probe = cls(random_state=0, device="cpu", **params).fit(X, Y, groups=groups)
    assert len(seen) == 1
    given, split = seen[0]
    assert np.array_equal(given, groups) and _disjoint(groups, split)
    results = probe.length_results_ if cls is AttentiveProbeClassifier else probe.normalization_results_
    assert results["n_holdout"] == len(split[1]) and results["n_holdout"] % 12 == 0
    without = cls(random_state=0, device="cpu", **params).fit(X, Y)
    assert not _disjoint(groups, seen[1][1])  # without groups the held-out clips cut through them
    assert without.classes_.tolist() == probe.classes_.tolist()


@pytest.mark.parametrize("cls", [LinearProbeClassifier, AttentiveProbeClassifier, PrototypicalProbeClassifier,
                                 ConvexGatedProbeClassifier])
def test_early_stopping_validates_on_whole_groups(monkeypatch, scenes, cls):
    X, Y = scenes
    groups = np.repeat(np.arange(30), 8)
    seen = _recording(monkeypatch, training)
    params = {"solver": "adamw"} if cls is LinearProbeClassifier else {}
    probe = cls(early_stopping=True, n_iter_no_change=1, max_iter=3, random_state=0, device="cpu", **params)
    probe.fit(X, Y, groups=groups)
    assert seen and all(np.array_equal(g, groups) and _disjoint(groups, s) for g, s in seen)
    assert probe.validation_loss_curve_


@pytest.mark.parametrize("cls", [AttentiveProbeClassifier, PrototypicalProbeClassifier, ConvexGatedProbeClassifier])
def test_bad_groups_are_refused(scenes, cls):
    X, Y = scenes
    with pytest.raises(ValueError, match="groups must hold one group label per clip: got shape"):
        cls(max_iter=1, random_state=0).fit(X, Y, groups=np.arange(len(X) - 1))
    with pytest.raises(ValueError, match="groups must be labels of one kind that sort"):
        cls(max_iter=1, random_state=0).fit(X, Y, groups=np.array(["a", 1] * (len(X) // 2), dtype=object))
    with pytest.raises(ValueError, match="groups holds one group"):
        cls(max_iter=2, early_stopping=True, random_state=0).fit(X, Y, groups=np.zeros(len(X)))


def test_metadata_routing_hands_each_fold_its_groups(monkeypatch, scenes):
    """``cross_validate(..., params={"groups": g})`` with routing: the splitter and each fold's ``fit`` get them."""
    import sklearn
    from sklearn.model_selection import GroupKFold, cross_validate

    X, Y = scenes
    groups = np.arange(len(X)) // 12
    seen = _recording(monkeypatch, training)
    with sklearn.config_context(enable_metadata_routing=True):
        probe = AttentiveProbeClassifier(max_iter=2, early_stopping=True, n_iter_no_change=1, random_state=0,
                                         device="cpu").set_fit_request(groups=True)
        result = cross_validate(probe, X, Y, cv=GroupKFold(3), params={"groups": groups}, return_indices=True)
    assert len(seen) == 3
    for (given, split), train in zip(seen, result["indices"]["train"]):
        assert np.array_equal(given, groups[train]) and _disjoint(given, split)
