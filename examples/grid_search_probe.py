"""Grid search over probe hyperparameters without recomputing embeddings.

Embeds every clip once with a frozen encoder, then searches the prototypical
probe's hyperparameters with GridSearchCV on the token maps. The embedding
step is unsupervised and per clip, so computing it once for all folds leaks
no label information.

    python examples/grid_search_probe.py            # YAMNet on the event scenes
    python examples/grid_search_probe.py --quick    # tiny random encoder on synthetic audio (seconds)
"""

import argparse

from sklearn.model_selection import GridSearchCV, KFold

from skprobe import FrozenEncoderTransformer, PrototypicalProbeClassifier
from skprobe.datasets import make_click_waveforms
from skprobe.metrics import get_scorer, macro_map


def load(quick: bool):
    if quick:
        wavs, Y = make_click_waveforms(60, 3)  # class j: a click train of its own period
        encoder = FrozenEncoderTransformer(encoder="tiny-cnn")
        return wavs[:40], Y[:40], wavs[40:], Y[40:], encoder, {"max_iter": 5}
    from skprobe import fetch_weights
    from skprobe.datasets import make_event_scenes

    fetch_weights("yamnet")
    data = make_event_scenes()
    encoder = FrozenEncoderTransformer(encoder="yamnet", verbose=1)
    return data.X_train, data.Y_train, data.X_test, data.Y_test, encoder, {}


def main(quick: bool = False) -> float:
    X_train_wav, Y_train, X_test_wav, Y_test, encoder, extra = load(quick)
    X_train = encoder.fit_transform(list(X_train_wav))  # once, for all folds and candidates
    X_test = encoder.transform(list(X_test_wav))
    search = GridSearchCV(
        PrototypicalProbeClassifier(prefix_tokens=encoder.prefix_tokens_, random_state=0, **extra),
        {"n_prototypes_per_class": [5, 20], "learning_rate": [5e-3, 2e-2]},
        scoring=get_scorer("macro_map"),
        cv=KFold(3, shuffle=True, random_state=0),
    ).fit(X_train, Y_train)
    test = macro_map(Y_test, search.decision_function(X_test))
    print(f"best {search.best_params_}: CV macro mAP {search.best_score_:.3f}, test macro mAP {test:.3f}")
    return test


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny encoder and synthetic audio")
    main(parser.parse_args().quick)
