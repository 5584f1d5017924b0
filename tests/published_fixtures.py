"""Small copies of published data sets, written in their exact distributed formats (for the tests).

Each writer makes a few short clips per split and the metadata files as the
publishers ship them: the same file names and folders, column names, header
or no header, separators (FSD50K's quoted comma lists, AudioSet's comment
lines and ", " separators, tab-separated DCASE tables), so the readers meet
what a user unpacks. Audio is a short tone whose pitch depends on the first
label, with a little noise. Each writer returns the split sizes it wrote.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

# Real names and ids from the published vocabularies.
FSD_VOCABULARY = [("Bark", "/m/05tny_"), ("Meow", "/m/07qrkrw"), ("Speech", "/m/09x0r"), ("Guitar", "/m/0342h")]
AUDIOSET_CLASSES = [("/m/09x0r", "Speech"), ("/m/05zppz", "Male speech, man speaking"), ("/m/0jbk", "Animal"),
                    ("/m/04rlf", "Music")]
ESC_CLASSES = ["dog", "rooster", "rain"]
URBAN_CLASSES = ["dog_bark", "siren", "jackhammer"]
WORDS = ["no", "right", "yes"]


def write_clip(path: Path, label: int, *, seconds: float = 0.25, rate: int = 16000, seed: int = 0,
               subtype: str = "PCM_16") -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * (300 + 500 * label) * t) + 0.02 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.astype(np.float32), rate, subtype=subtype)


def _csv(path: Path, rows, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n", **kwargs).writerows(rows)


def make_esc50(parent: Path, per_class_and_fold: int = 1) -> dict:
    """``parent/ESC-50-master/{meta/esc50.csv,audio/}`` (the GitHub archive's layout)."""
    root = parent / "ESC-50-master"
    rows = [["filename", "fold", "target", "category", "esc10", "src_file", "take"]]
    n = 0
    for fold in range(1, 6):
        for target, category in enumerate(ESC_CLASSES):
            for k in range(per_class_and_fold):
                src = 100000 + 10 * (n - k % 2)  # takes A and B of one (fold, class) share a source recording
                name = f"{fold}-{src}-{'AB'[k % 2]}-{target}.wav"
                rows.append([name, fold, target, category, str(category == "dog"), src, "AB"[k % 2]])
                write_clip(root / "audio" / name, target, rate=44100, seed=n)
                n += 1
    _csv(root / "meta" / "esc50.csv", rows)
    return {f"fold{k}": len(ESC_CLASSES) * per_class_and_fold for k in range(1, 6)}


def make_fsd50k(root: Path, n_train: int = 8, n_val: int = 3, n_eval: int = 4) -> dict:
    """``FSD50K.ground_truth/{vocabulary,dev,eval}.csv`` with ``FSD50K.{dev,eval}_audio/``."""
    _csv(root / "FSD50K.ground_truth" / "vocabulary.csv",
         [[i, name, mid] for i, (name, mid) in enumerate(FSD_VOCABULARY)])
    rng = np.random.default_rng(0)
    dev = [["fname", "labels", "mids", "split"]]
    evaluation = [["fname", "labels", "mids"]]
    fname = 1000
    for split, n in (("train", n_train), ("val", n_val), ("eval", n_eval)):
        for i in range(n):
            picked = sorted(rng.choice(len(FSD_VOCABULARY), size=1 + i % 2, replace=False))
            labels = ",".join(FSD_VOCABULARY[j][0] for j in picked)
            mids = ",".join(FSD_VOCABULARY[j][1] for j in picked)
            folder = "FSD50K.eval_audio" if split == "eval" else "FSD50K.dev_audio"
            write_clip(root / folder / f"{fname}.wav", int(picked[0]), rate=44100, seed=fname)
            (evaluation if split == "eval" else dev).append(
                [fname, labels, mids] + ([] if split == "eval" else [split]))
            fname += 1
    _csv(root / "FSD50K.ground_truth" / "dev.csv", dev)  # minimal quoting: "Bark,Meow" only where a comma is
    _csv(root / "FSD50K.ground_truth" / "eval.csv", evaluation)
    return {"train": n_train, "val": n_val, "eval": n_eval}


def _ytid(rng) -> str:
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
    return "".join(rng.choice(alphabet, 11))


def make_audioset(root: Path, n_balanced: int = 8, n_eval: int = 6, n_unbalanced: int = 6,
                  missing: tuple[int, int, int] = (2, 1, 1)) -> dict:
    """The three segment CSVs and ``class_labels_indices.csv`` in ``root``, clips below ``root/audio``.

    Clips are named in the styles users have (``<id>.wav``, ``Y<id>.wav``,
    ``<id>_<start>.flac``, ``<id>_<start ms>_<end ms>.wav``); the last
    ``missing`` segments of each CSV (balanced, eval, unbalanced) have no clip.
    """
    # As published: display names always quoted, even without a comma.
    (root / "class_labels_indices.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},{mid},"{name}"\n' for i, (mid, name) in enumerate(AUDIOSET_CLASSES)))
    rng = np.random.default_rng(1)
    found = {}
    styles = ["{id}.wav", "Y{id}.wav", "{id}_{start:.3f}.flac", "{id}_{ms}_{ms_end}.wav", "audio_sub/{id}.wav"]
    for (subset, n), n_missing in zip((("balanced_train", n_balanced), ("eval", n_eval),
                                       ("unbalanced_train", n_unbalanced)), missing):
        lines = ["# Segments csv created Sun Mar  5 10:54:31 2017",
                 f"# num_ytids={n}, num_segs={n}, num_unique_labels={len(AUDIOSET_CLASSES)}, num_positive_labels=0",
                 "# YTID, start_seconds, end_seconds, positive_labels"]
        for i in range(n):
            ytid = _ytid(rng)
            start = float(rng.integers(0, 30))
            picked = sorted(rng.choice(len(AUDIOSET_CLASSES), size=1 + i % 2, replace=False))
            mids = ",".join(AUDIOSET_CLASSES[j][0] for j in picked)
            lines.append(f'{ytid}, {start:.3f}, {start + 10:.3f}, "{mids}"')
            if i < n - n_missing:
                name = styles[i % len(styles)].format(id=ytid, start=start, ms=int(start * 1000),
                                                      ms_end=int(start * 1000) + 10000)
                write_clip(root / "audio" / name, int(picked[0]), seed=i + 100 * len(found))
        (root / f"{subset}_segments.csv").write_text("\n".join(lines) + "\n")
        found[subset] = n - n_missing
    return found


def make_urban_sed(parent: Path, sizes=(("train", 6), ("validate", 3), ("test", 3)), *, tables: bool = False) -> dict:
    """``parent/URBAN-SED_v2.0.0/audio/<split>/*.wav`` with per-soundscape ``annotations/<split>/*.txt``
    (headerless ``onset offset label``), or with DCASE tables ``metadata/<split>.tsv`` when ``tables``."""
    root = parent / "URBAN-SED_v2.0.0"
    rng = np.random.default_rng(2)
    for s, (split, n) in enumerate(sizes):
        table = ["filename\tonset\toffset\tevent_label"]
        for i in range(n):
            name = f"soundscape_{split}_{'uniform' if i % 2 else 'bimodal'}{i}"
            events = []
            for _ in range(1 + i % 3):
                label = int(rng.integers(len(URBAN_CLASSES)))
                onset = float(rng.uniform(0, 0.2))
                events.append((onset, onset + float(rng.uniform(0.01, 0.05)) + 1e-15, URBAN_CLASSES[label]))
            write_clip(root / "audio" / split / f"{name}.wav", URBAN_CLASSES.index(events[0][2]), rate=44100,
                       seed=100 * s + i)
            if tables:
                table += [f"{name}.wav\t{a}\t{b}\t{c}" for a, b, c in events]
            else:
                path = root / "annotations" / split / f"{name}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(f"{a!r}\t{b!r}\t{c}\n" for a, b, c in events))  # full float precision
        if tables:
            (root / "metadata").mkdir(exist_ok=True)
            (root / "metadata" / f"{split}.tsv").write_text("\n".join(table) + "\n")
    return dict(sizes)


def make_speech_commands(root: Path, per_word: int = 6) -> dict:
    """Word folders, ``_background_noise_/``, ``validation_list.txt`` and ``testing_list.txt``."""
    val, test = [], []
    for w, word in enumerate(WORDS):
        for k in range(per_word):
            rel = f"{word}/{k:08x}_nohash_{k % 2}.wav"
            write_clip(root / rel, w, seed=10 * w + k)
            if k == 0:
                val.append(rel)
            elif k == 1:
                test.append(rel)
    write_clip(root / "_background_noise_" / "white_noise.wav", 0, seconds=0.5)
    (root / "_background_noise_" / "README.md").write_text("noise\n")
    (root / "LICENSE").write_text("CC-BY-4.0\n")
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    n = len(WORDS) * per_word
    return {"train": n - len(val) - len(test), "validation": len(val), "testing": len(test)}
