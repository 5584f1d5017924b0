"""Follow ``X`` through a probe's ``fit``: the files its data path visits, and how often it returns to one.

A structural measure (how far a reader must jump to follow the data), not a
timing. Every function of ``skprobe`` that is called with ``X``, or with an
array, tensor or token container returned by such a call (or an object
built from one), is a stop; each
function counts once, at its first call (the path, not the training loop);
consecutive stops in one file are one stop. A return is a stop in a file
the path has already left.

Run::

    PYTHONPATH=$PWD python benchmarks/fit_walk.py                  # the three single-layer probes, defaults
    PYTHONPATH=$PWD python benchmarks/fit_walk.py --probes linear --root /path/to/an/other/checkout
"""

from __future__ import annotations

import argparse
import os
import sys


def walk(probe: str, root: str) -> list[tuple[str, list[str]]]:
    import numpy as np
    import torch

    from skprobe import AttentiveProbeClassifier, LinearProbeClassifier, PrototypicalProbeClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 8, 16)).astype(np.float32)
    Y = (rng.random((240, 3)) < 0.3).astype(int)
    cls = {"linear": LinearProbeClassifier, "attentive": AttentiveProbeClassifier,
           "prototypical": PrototypicalProbeClassifier}[probe]
    estimator = cls(random_state=0, device="cpu")
    package = os.path.join(root, "skprobe")
    derived, keep, frames, stops = {id(X)}, [X], set(), []

    def tracer(frame, event, arg):
        code = frame.f_code
        if not code.co_filename.startswith(package):
            return
        if event == "call":
            names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
            if any(id(frame.f_locals[n]) in derived for n in names if n in frame.f_locals):
                stops.append((os.path.relpath(code.co_filename, root), code.co_name))
                frames.add(id(frame))
                if code.co_name == "__init__" and "self" in frame.f_locals:  # an object built from the data
                    derived.add(id(frame.f_locals["self"]))
                    keep.append(frame.f_locals["self"])
        elif event == "return" and id(frame) in frames:
            frames.discard(id(frame))  # a later frame may reuse the id
            if arg is None:
                return
            for value in arg if isinstance(arg, tuple) else (arg,):
                if isinstance(value, (np.ndarray, torch.Tensor)) or type(value).__name__ in (
                        "TokenSource", "TokenView", "StoreArray"):
                    derived.add(id(value))
                    keep.append(value)  # alive, so that its id is not reused

    sys.setprofile(tracer)
    try:
        estimator.fit(X, Y)
    finally:
        sys.setprofile(None)
    path: list[tuple[str, list[str]]] = []
    for file, name in dict.fromkeys(stops):
        if path and path[-1][0] == file:
            path[-1][1].append(name)
        else:
            path.append((file, [name]))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", nargs="+", default=["linear", "attentive", "prototypical"])
    parser.add_argument("--root", default=os.getcwd(), help="checkout whose skprobe to follow")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    sys.path.insert(0, root)
    for probe in args.probes:
        path = walk(probe, root)
        seen, returns = set(), 0
        for file, _ in path:
            returns += file in seen
            seen.add(file)
        print(f"{probe}: {len(path)} stops over {len(seen)} files, {returns} returns to a file already left")
        for file, names in path:
            print(f"    {file}: {', '.join(names)}")


if __name__ == "__main__":
    main()
