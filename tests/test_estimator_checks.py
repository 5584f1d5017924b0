"""scikit-learn's estimator checks over every public estimator, with no expected failures."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skprobe import (
    AttentiveProbeClassifier,
    ConvexGatedProbeClassifier,
    FrozenEncoderTransformer,
    LinearProbeClassifier,
    PrototypicalProbeClassifier,
)

ESTIMATORS = [
    LinearProbeClassifier(random_state=0),
    LinearProbeClassifier(pooling="cls", prefix_tokens=1, random_state=0),
    AttentiveProbeClassifier(random_state=0),
    PrototypicalProbeClassifier(random_state=0),
    PrototypicalProbeClassifier(binarize=False, loss="bce", max_iter=30, random_state=0),  # the default length is checked above
    ConvexGatedProbeClassifier(n_prototypes=8, max_iter=10, random_state=0),  # small: its defaults cost more per fit
    FrozenEncoderTransformer(encoder="tiny-cnn"),
    FrozenEncoderTransformer(encoder="tiny-vit", layers=[0, 2]),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
