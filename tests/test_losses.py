"""Asymmetric loss against a direct numpy transcription of its definition."""

import numpy as np
import pytest
import torch

from skprobe.probes.losses import AsymmetricLoss, make_loss


def reference_asl(logits, targets, gamma_neg, gamma_pos, clip, eps=1e-8):
    p = 1 / (1 + np.exp(-logits))
    p_m = np.maximum(p - clip, 0) if clip > 0 else p
    pos = targets * (1 - p) ** gamma_pos * np.log(np.maximum(p, eps))
    neg = (1 - targets) * p_m ** gamma_neg * np.log(np.maximum(1 - p_m, eps))
    return -(pos + neg).sum(axis=1).mean()


@pytest.mark.parametrize("gammas", [(4, 1, 0.05), (1, 0, 0), (0, 0, 0), (2, 0.5, 0.2)])
def test_asl_matches_definition(gammas):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3, size=(16, 5))
    targets = (rng.random((16, 5)) < 0.3).astype(float)
    ours = AsymmetricLoss(*gammas)(torch.tensor(logits), torch.tensor(targets)).item()
    assert ours == pytest.approx(reference_asl(logits, targets, *gammas), rel=1e-10)


def test_asl_without_focusing_is_summed_bce():
    rng = np.random.default_rng(1)
    logits, targets = torch.tensor(rng.normal(size=(8, 3))), torch.tensor((rng.random((8, 3)) < 0.5) * 1.0)
    bce = make_loss("bce", gamma_neg=0, gamma_pos=0, clip=0)(logits, targets)
    torch.testing.assert_close(AsymmetricLoss(0, 0, 0)(logits, targets), bce)


def test_asl_clip_ignores_easy_negatives():
    loss = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0.2)
    logits = torch.tensor([[-3.0]])  # p = 0.047 < clip: a negative this easy costs nothing
    assert loss(logits, torch.zeros(1, 1)).item() == 0.0


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="loss must be one of"):
        make_loss("hinge", gamma_neg=0, gamma_pos=0, clip=0)
