"""scikit-learn's estimator checks over every public estimator, with no expected failures.

The checks fit each estimator dozens of times on toy data, so the probes run at
small fixed settings (few epochs, no internal ``cv``, few prototypes): the checks
test the API contract, which does not depend on how long a probe trains. The
prototypical probe also runs at its defaults (the ``"auto"`` rules: up to 90
epochs, 20 prototypes per class), marked slow. Torch runs single-threaded here:
on toy tensors thread synchronisation costs more than it saves.
"""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from skprobe import (
    AttentiveProbeClassifier,
    ConvexGatedProbeClassifier,
    FrozenEncoderTransformer,
    LinearProbeClassifier,
    PrototypicalProbeClassifier,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Small fixed settings: what the checks exercise is the same at any length of training.
SMALL = dict(max_iter=10, random_state=0)

ESTIMATORS = [
    LinearProbeClassifier(cv=None, **SMALL),
    LinearProbeClassifier(pooling="cls", prefix_tokens=1, cv=None, **SMALL),
    AttentiveProbeClassifier(**SMALL),
    PrototypicalProbeClassifier(n_prototypes_per_class=4, **SMALL),
    PrototypicalProbeClassifier(binarize=False, loss="bce", n_prototypes_per_class=4, **SMALL),
    ConvexGatedProbeClassifier(n_prototypes=8, **SMALL),
    FrozenEncoderTransformer(encoder="tiny-cnn"),
    FrozenEncoderTransformer(encoder="tiny-vit", layers=[0, 2]),
]

#: At its defaults (``max_iter``, ``batch_size`` and ``normalize_tokens`` "auto").
DEFAULTS = [PrototypicalProbeClassifier(random_state=0)]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks(DEFAULTS)
def test_sklearn_compatible_at_defaults(estimator, check):
    check(estimator)
