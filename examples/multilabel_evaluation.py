"""Multi-label evaluation: one native multi-label probe vs MultiOutputClassifier.

A native probe trains one head for all classes (shared prototypes, one
optimiser); ``MultiOutputClassifier`` trains one binary probe per class. Both
are scored with the named metrics of ``skprobe.metrics``.

    python examples/multilabel_evaluation.py           # YAMNet tokens of the event scenes
    python examples/multilabel_evaluation.py --quick   # synthetic token maps (seconds)
"""

import argparse
import time

import numpy as np
from sklearn.multioutput import MultiOutputClassifier

from skprobe import LinearProbeClassifier, PrototypicalProbeClassifier
from skprobe.metrics import macro_map, macro_roc_auc, micro_ap


def load(quick: bool):
    if quick:
        from skprobe.datasets import make_token_scenes

        data = make_token_scenes(400, n_tokens=32, dim=32, n_classes=5, event_strength=4.0, random_state=0)
        return data.X[:300], data.y[:300], data.X[300:], data.y[300:], 0
    from skprobe import FrozenEncoderTransformer, fetch_weights
    from skprobe.datasets import make_event_scenes

    fetch_weights("yamnet")
    data = make_event_scenes()
    encoder = FrozenEncoderTransformer(encoder="yamnet", verbose=1)
    return (encoder.fit_transform(list(data.X_train)), data.Y_train, encoder.transform(list(data.X_test)),
            data.Y_test, encoder.prefix_tokens_)


def main(quick: bool = False) -> dict:
    X_train, Y_train, X_test, Y_test, prefix = load(quick)
    models = {
        "native prototypical": PrototypicalProbeClassifier(prefix_tokens=prefix, random_state=0),
        "native linear": LinearProbeClassifier(prefix_tokens=prefix, random_state=0),
        "MultiOutput(linear)": MultiOutputClassifier(LinearProbeClassifier(prefix_tokens=prefix, random_state=0)),
    }
    results = {}
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(X_train, Y_train)
        seconds = time.perf_counter() - start
        if isinstance(model, MultiOutputClassifier):  # a list of (n, 2) arrays -> (n, C)
            scores = np.column_stack([p[:, 1] for p in model.predict_proba(X_test)])
        else:
            scores = model.predict_proba(X_test)
        results[name] = (macro_map(Y_test, scores), micro_ap(Y_test, scores), macro_roc_auc(Y_test, scores))
        print(f"{name:<22} macro mAP {results[name][0]:.3f}  micro AP {results[name][1]:.3f}  "
              f"macro ROC-AUC {results[name][2]:.3f}  fit {seconds:.1f} s")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic token maps")
    main(parser.parse_args().quick)
