"""Training recipes of a protocol run: skprobe's defaults, or the paper's.

The paper (Rauch et al., "Unmute the Patch Tokens") trains every probe on
cached last-layer tokens with AdamW and a cosine schedule for 30 epochs in
batches of 128, on raw tokens, and tunes the learning rate per encoder, data
set and probe. ``recipe="paper"`` sets exactly that through each probe's
public parameters and chooses the learning rate from :data:`PAPER_LEARNING_RATES`
by the protocol's metric on a validation split (the official one where the
data set has one, else 10 % of the training clips). skprobe's defaults
(``recipe="default"``) choose their own settings instead (``"auto"``).
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

__all__ = ["RECIPES", "PAPER_RECIPE", "PAPER_LEARNING_RATES", "recipe_params", "validation_split"]

RECIPES = ("default", "paper")

#: Settings every probe gets under the paper's recipe.
PAPER_RECIPE = {"batch_size": 128, "max_iter": 30, "normalize_tokens": "none", "early_stopping": False}

#: Learning rates the paper's recipe chooses from, per probe. The paper tunes the rate per encoder, data set
#: and probe without publishing one grid; these half-decade grids cover the range it states for the
#: prototype probes (2e-3 to 8e-2) and skprobe's earlier fixed defaults (1e-2 linear, 1e-3 attentive).
PAPER_LEARNING_RATES = {
    "linear": (1e-3, 3e-3, 1e-2, 3e-2),
    "attentive": (1e-4, 3e-4, 1e-3, 3e-3),
    "prototypical": (2e-3, 8e-3, 2e-2, 8e-2),
}

#: Share of the training clips held out to choose the learning rate when the protocol has no validation split.
VALIDATION_FRACTION = 0.1


def recipe_params(recipe: str, probe: str, *, prefix_tokens: int, prototypes_per_class: int = 20) -> dict:
    """Probe parameters of ``recipe`` for the probe called ``probe`` (the learning rate is chosen apart).

    Under the paper's recipe the linear probe reads the ``[cls]`` token when
    the encoder has one (else the mean of the tokens) and selects nothing by
    cross-validation; the prototypical probe has ``prototypes_per_class``
    prototypes per class.

    Examples
    --------
    >>> recipe_params("paper", "linear", prefix_tokens=1)["pooling"]
    'cls'
    >>> recipe_params("default", "linear", prefix_tokens=1)
    {}
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    if recipe == "default":
        return {}
    params = dict(PAPER_RECIPE)
    if probe == "linear":
        params.update(cv=None, pooling="cls" if prefix_tokens > 0 else "mean")
    elif probe == "prototypical":
        params["n_prototypes_per_class"] = prototypes_per_class
    return params


def validation_split(train: np.ndarray, labels: np.ndarray | None, *, seed: int = 0,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, validation)`` indices: :data:`VALIDATION_FRACTION` of ``train`` held out.

    Stratified by ``labels`` (class indices of single-label clips) where every
    class can be; with ``groups`` (one per clip of ``train``) whole groups
    are held out instead, as the probes' own splits hold them out. Sorted, so
    the tokens are read in store order.

    Examples
    --------
    >>> fit, val = validation_split(np.arange(20), None)
    >>> len(fit), len(val)
    (18, 2)
    """
    n_val = max(1, int(round(VALIDATION_FRACTION * len(train))))
    if len(train) < 2:
        raise ValueError(f"cannot hold out validation clips from {len(train)} training clip(s)")
    if groups is not None:
        from ..probes._training import validation_split as split_clips

        fit, val = split_clips(len(train), VALIDATION_FRACTION, None, seed, groups)
        return train[fit], train[val]
    stratify = None
    if labels is not None:
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() >= 2 and n_val >= len(counts):
            stratify = labels
    fit, val = train_test_split(train, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(fit), np.sort(val)
