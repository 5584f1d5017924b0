"""Event scenes and clips: mixing logic on generated tones, catalog rules, and one real Debian build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from skprobe.datasets import EVENT_CLASSES, PACKAGES, SoundSource, make_event_clips, make_event_scenes, split_sources
from skprobe.datasets.sources import classify_package

SR = 8000


def _tone(path: Path, seconds: float, freq: float, sr: int = 22050, noise: bool = False, seed: int = 0):
    t = np.arange(int(seconds * sr)) / sr
    wav = (np.random.default_rng(seed).standard_normal(t.size) if noise else np.sin(2 * np.pi * freq * t))
    wav = 0.3 * wav * np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)  # 5 ms ramps
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.astype(np.float32), sr)


@pytest.fixture(scope="module")
def fake_sources(tmp_path_factory) -> list[SoundSource]:
    """Three classes x three groups x two files, plus four bed groups.

    ``short`` (0.2 s) become bursts, ``mid`` (1.5 s) play once, ``long`` (5 s) are cut.
    """
    root = tmp_path_factory.mktemp("sources")
    sources = []
    for c, (label, seconds) in enumerate([("short", 0.2), ("mid", 1.5), ("long", 5.0)]):
        for g in range(3):
            for k in range(2):
                path = root / label / f"g{g}" / f"{k}.wav"
                _tone(path, seconds, 200.0 * (c + 1) + 37 * g + 11 * k)
                sources.append(SoundSource(path, label, f"{label}-g{g}", "fake", "CC0-1.0",
                                           name=f"fake:{label}/g{g}/{k}.wav"))
    for g, seconds in enumerate([1.0, 3.0, 12.0, 2.0]):
        path = root / "beds" / f"bed{g}.flac"
        _tone(path, seconds, 0, noise=True, seed=g)
        sources.append(SoundSource(path, None, f"bed{g}", "fake", "CC-BY-4.0", name=f"fake:beds/bed{g}.flac"))
    return sources


KW = dict(sample_rate=SR, clip_seconds=4.0, max_event_seconds=3.0, burst_below=0.5, cache=False)


def test_shapes_labels_and_metadata(fake_sources):
    data = make_event_scenes(12, 6, sources=fake_sources, **KW)
    assert data.class_names == ["long", "mid", "short"]
    assert data.X_train.shape == (12, 4 * SR) and data.X_test.shape == (6, 4 * SR)
    assert data.X_train.dtype == np.float32 and np.abs(data.X_train).max() <= 0.98 + 1e-4
    assert data.Y_train.shape == (12, 3) and data.Y_train.dtype == np.int64
    for X, Y, events, beds in ((data.X_train, data.Y_train, data.events_train, data.beds_train),
                               (data.X_test, data.Y_test, data.events_test, data.beds_test)):
        assert len(events) == len(beds) == len(X)
        for y, evs in zip(Y, events):
            assert 1 <= len(evs) <= 3
            assert [data.class_names[j] for j in np.flatnonzero(y)] == sorted(e["class"] for e in evs)
            for e in evs:
                assert 0 <= e["onset"] < e["offset"] <= 4.0 + 1e-9
                assert e["offset"] - e["onset"] <= 3.0 + 1e-9
    assert set(data.licences.values()) == {"CC0-1.0", "CC-BY-4.0"}
    assert data.packages == [{"package": "fake", "version": None, "licences": ["CC-BY-4.0", "CC0-1.0"],
                              "copyright": None}]
    assert data.cache_path is None and "3 classes" in data.DESCR


def test_deterministic_and_seed_dependent(fake_sources):
    a = make_event_scenes(8, 4, seed=3, sources=fake_sources, **KW)
    b = make_event_scenes(8, 4, seed=3, sources=fake_sources, **KW)
    c = make_event_scenes(8, 4, seed=4, sources=fake_sources, **KW)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert a.events_train == b.events_train and a.beds_test == b.beds_test
    assert not np.array_equal(a.X_train, c.X_train)
    # scene i does not depend on how many scenes are drawn
    d = make_event_scenes(3, 2, seed=3, sources=fake_sources, **KW)
    np.testing.assert_array_equal(d.X_train, a.X_train[:3])
    assert d.events_test == a.events_test[:2]


def test_train_and_test_use_disjoint_groups(fake_sources):
    data = make_event_scenes(20, 10, sources=fake_sources, **KW)
    group_of = {s.name: s.group for s in fake_sources}
    for label in [*data.class_names, "<bed>"]:
        train = {group_of[n] for n in data.split["train"][label]}
        test = {group_of[n] for n in data.split["test"][label]}
        assert train and test and not train & test, label
    for split in ("train", "test"):
        allowed = {n for names in data.split[split].values() for n in names}
        used = {n for evs in data[f"events_{split}"] for e in evs for n in e["sources"]}
        used |= {b["source"] for b in data[f"beds_{split}"]}
        assert used <= allowed


def test_split_sources_share_and_errors(fake_sources):
    splits = split_sources(fake_sources, test_fraction=1 / 3)
    for label in ("short", "mid", "long"):
        assert sum(s.label == label for s in splits["test"]) == 2  # one group of three
    assert split_sources(fake_sources) == splits  # deterministic

    def test_groups(seed):
        return {s.group for s in split_sources(fake_sources, split_seed=seed)["test"]}

    # all groups have two files: split_seed decides which one goes to test
    assert len({frozenset(test_groups(seed)) for seed in range(8)}) > 1
    one_group = [s for s in fake_sources if s.group != "mid-g1" and s.group != "mid-g2"]
    with pytest.raises(ValueError, match="class 'mid' has recordings from one group only"):
        split_sources(one_group)
    with pytest.raises(ValueError, match="no ambient bed"):
        split_sources([s for s in fake_sources if s.label is not None])


def test_duplicate_files_are_dropped_before_the_split(fake_sources, tmp_path):
    copy = tmp_path / "copy.wav"
    copy.write_bytes(fake_sources[0].path.read_bytes())
    dup = SoundSource(copy, "short", "other-kit", "fake", "CC0-1.0", name="zz:copy.wav")
    splits = split_sources([*fake_sources, dup])
    assert all(s.name != "zz:copy.wav" for split in splits.values() for s in split)


def test_short_sources_become_bursts(fake_sources):
    data = make_event_scenes(30, 0, sources=fake_sources, burst_hits=(3, 5), **KW)
    group_of = {s.name: s.group for s in fake_sources}
    seen = {"short": 0, "mid": 0}
    for evs in data.events_train:
        for e in evs:
            assert e["n_hits"] == len(e["sources"])
            if e["class"] == "short":
                seen["short"] += 1
                assert 3 <= e["n_hits"] <= 5
                assert {group_of[n] for n in e["sources"]} == {e["group"]}  # hits from one group
                # hits are at least 0.12 s apart: the burst lasts longer than one 0.2 s hit
                assert e["offset"] - e["onset"] > 0.2 + 0.12 * (e["n_hits"] - 1) - 1e-6
            else:
                assert e["n_hits"] == 1
                seen["mid"] += e["class"] == "mid"
                expected = 3.0 if e["class"] == "long" else 1.5
                assert e["offset"] - e["onset"] == pytest.approx(expected, abs=0.02)
    assert seen["short"] > 3 and seen["mid"] > 3


def test_energy_sits_inside_the_labelled_events(fake_sources):
    data = make_event_scenes(10, 0, sources=fake_sources, bed_db=(-100.0, -100.0), **KW)
    for x, evs in zip(data.X_train, data.events_train):
        inside = np.zeros(x.size, bool)
        for e in evs:
            seg = x[int(e["onset"] * SR):int(e["offset"] * SR)]
            assert np.sqrt(np.mean(seg ** 2)) > 1e-3
            inside[int(e["onset"] * SR):int(np.ceil(e["offset"] * SR))] = True
        assert np.abs(x[~inside]).max(initial=0) < 1e-4  # only the (silent) bed outside events


def test_levels_follow_the_parameters(fake_sources):
    data = make_event_scenes(10, 0, sources=fake_sources, event_db=(-20.0, -20.0),
                             bed_db=(-40.0, -40.0), n_events=(1, 1), **KW)
    for x, evs, bed in zip(data.X_train, data.events_train, data.beds_train):
        assert bed["level_db"] == pytest.approx(-40.0, abs=0.01)  # no peak rescaling at these levels
        assert evs[0]["level_db"] == pytest.approx(-20.0, abs=0.01)
        quiet = np.ones(x.size, bool)
        quiet[int(evs[0]["onset"] * SR):int(np.ceil(evs[0]["offset"] * SR))] = False
        if quiet.sum() > SR // 2:
            bed_rms_db = 20 * np.log10(np.sqrt(np.mean(x[quiet] ** 2)))
            assert bed_rms_db == pytest.approx(-40.0, abs=2.0)


def test_classes_subset(fake_sources):
    data = make_event_scenes(6, 3, sources=fake_sources, classes=["mid", "short"], **KW)
    assert data.class_names == ["mid", "short"] and data.Y_train.shape == (6, 2)
    with pytest.raises(ValueError, match=r"classes \['nope'\] have no sources"):
        make_event_scenes(6, 3, sources=fake_sources, classes=["nope"], **KW)


def test_clips_are_single_label_and_balanced(fake_sources):
    data = make_event_clips(9, 6, sources=fake_sources, **KW)
    assert sorted(data.y_train.tolist()) == sorted(["long", "mid", "short"] * 3)
    assert sorted(data.y_test.tolist()) == sorted(["long", "mid", "short"] * 2)
    np.testing.assert_array_equal(data.Y_train.sum(axis=1), 1)
    np.testing.assert_array_equal(np.array(data.class_names)[data.Y_train.argmax(1)], data.y_train)
    assert [len(e) for e in data.events_test] == [1] * 6


def test_cache_round_trip(fake_sources, tmp_path, monkeypatch):
    monkeypatch.setenv("SKPROBE_HOME", str(tmp_path))
    kw = {**KW, "cache": True}
    first = make_event_scenes(5, 3, sources=fake_sources, **kw)
    assert first.cache_path.parent == tmp_path / "data" and first.cache_path.suffix == ".npz"
    assert first.cache_path.with_suffix(".json").is_file()
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no temporaries left
    meta = json.loads(first.cache_path.with_suffix(".json").read_text())
    assert meta["params"]["n_train"] == 5 and meta["class_names"] == first.class_names
    with np.load(first.cache_path) as npz:
        assert npz["X_train"].dtype == np.int16
    second = make_event_scenes(5, 3, sources=fake_sources, **kw)
    np.testing.assert_array_equal(first.X_test, second.X_test)
    assert first.events_train == second.events_train and second.build_seconds == first.build_seconds
    # what is returned fresh equals what is read back (int16 round trip happens in both)
    fresh = make_event_scenes(5, 3, sources=fake_sources, **KW)
    np.testing.assert_array_equal(fresh.X_train, second.X_train)
    other = make_event_scenes(5, 3, seed=1, sources=fake_sources, **kw)
    assert other.cache_path != first.cache_path
    clips = make_event_clips(3, 3, sources=fake_sources, **kw)
    assert clips.cache_path.name.startswith("event_clips-")


@pytest.mark.parametrize("kwargs, match", [
    ({"n_train": -1}, "n_train must be a non-negative int"),
    ({"seed": -2}, "seed must be a non-negative int"),
    ({"sample_rate": 16000.0}, "sample_rate must be an int"),
    ({"clip_seconds": 0}, "clip_seconds must be positive"),
    ({"max_event_seconds": 5.0}, r"max_event_seconds must be in \(0, clip_seconds=4.0\]"),
    ({"burst_below": 3.0}, r"burst_below must be in \[0, max_event_seconds\)"),
    ({"n_events": (0, 2)}, "n_events must be a pair of ints"),
    ({"burst_hits": (4, 2)}, "burst_hits must be a pair of ints"),
    ({"event_db": (-10.0, 3.0)}, "event_db must be a pair low <= high <= 0"),
    ({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\)"),
    ({"max_sources_per_class": 0}, "max_sources_per_class must be >= 1"),
])
def test_bad_parameters(fake_sources, kwargs, match):
    kw = {**KW, **kwargs}
    n_train = kw.pop("n_train", 2)
    with pytest.raises(ValueError, match=match):
        make_event_scenes(n_train, 1, sources=fake_sources, **kw)


def test_unreadable_and_low_rate_sources_are_skipped(fake_sources, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    low = tmp_path / "low.wav"
    _tone(low, 1.0, 300, sr=8000)
    extra = [SoundSource(bad, "mid", "mid-g0", "fake", "CC0-1.0", name="fake:bad.wav"),
             SoundSource(low, "mid", "mid-g0", "fake", "CC0-1.0", name="fake:low.wav")]
    data = make_event_scenes(4, 2, sources=[*fake_sources, *extra], min_source_rate=16000, **KW)
    reasons = "\n".join(data.skipped)
    assert "fake:bad.wav: unreadable" in reasons and "fake:low.wav: sample rate 8000 < 16000" in reasons


# -- catalog rules on a fake package tree ---------------------------------------------------------

def test_catalog_rules_on_fake_trees(tmp_path):
    def touch(root, rel):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")

    hyd = tmp_path / "hydrogen"
    kit = hyd / "usr/share/hydrogen/data/drumkits/BJA_Pacific"
    touch(hyd, kit.relative_to(hyd) / "BD_01.aiff")
    touch(hyd, kit.relative_to(hyd) / "CB_01.aiff")
    touch(hyd, kit.relative_to(hyd) / "XX.aiff")
    (kit / "drumkit.xml").write_text(
        "<drumkit_info><instrumentList>"
        "<instrument><name>BassDrum</name><layer><filename>BD_01.aiff</filename></layer></instrument>"
        "<instrument><name>Crash Left</name><layer><filename>CB_01.aiff</filename></layer></instrument>"
        "<instrument><name>Sample: XX.aiff</name><layer><filename>XX.aiff</filename></layer></instrument>"
        "</instrumentList></drumkit_info>")
    got = {s.path.name: (s.label, s.group, s.licence) for s in classify_package("hydrogen-drumkits", hyd)}
    assert got == {"BD_01.aiff": ("kick", "hydrogen-drumkits/BJA_Pacific", "CC-BY-SA-3.0-US"),
                   "CB_01.aiff": ("cymbal", "hydrogen-drumkits/BJA_Pacific", "CC-BY-SA-3.0-US")}

    tux = tmp_path / "tux"
    for rel in ["animals/mammals/dogs/dog.ogg", "animals/mammals/dogs/dog_desc_fr.ogg",
                "animals/birds/heron_greatblue_flying.ogg", "animals/mammals/pig_golden2.ogg",
                "food/fruit/apple_red.ogg", "food/fruit/apple_red_desc.ogg"]:
        touch(tux, "usr/share/tuxpaint/stamps/" + rel)
    got = {s.name.split("/")[-1]: (s.label, s.group) for s in classify_package("tuxpaint-stamps-default", tux)}
    assert got == {"dog.ogg": ("animal", "tuxpaint-stamps-default/dogs"),
                   "dog_desc_fr.ogg": ("speech", "tuxpaint-stamps-default/lang-fr"),
                   "heron_greatblue_flying.ogg": ("bird", "tuxpaint-stamps-default/heron"),
                   "pig_golden2.ogg": ("animal", "tuxpaint-stamps-default/pig"),
                   "apple_red_desc.ogg": ("speech", "tuxpaint-stamps-default/lang-en")}

    mt = tmp_path / "mt"
    base = "usr/share/games/minetest/games/minetest_game/mods/"
    for rel in ["default/sounds/default_snow_footstep.3.ogg", "doors/sounds/doors_glass_door_open.ogg",
                "env_sounds/sounds/env_sounds_water.1.ogg", "fire/sounds/fire_extinguish_flame.1.ogg"]:
        touch(mt, base + rel)
    got = {s.path.name: (s.label, s.group, s.licence) for s in classify_package("minetest-data", mt)}
    assert got == {"default_snow_footstep.3.ogg": ("footsteps", "minetest-data/snow", "CC-BY-SA-3.0"),
                   "doors_glass_door_open.ogg": ("door", "minetest-data/glass_door", "CC-BY-3.0"),
                   "env_sounds_water.1.ogg": (None, "minetest-data/water", "CC-BY-SA-3.0")}

    buckle = tmp_path / "buckle"
    touch(buckle, "usr/share/buckle/wav/1c-0.wav")
    (src,) = classify_package("bucklespring-data", buckle)
    assert (src.label, src.group, src.burst_key) == ("typing", "bucklespring-data/key-1c",
                                                     "bucklespring-data/keyboard")
    with pytest.raises(ValueError, match="no classification rules for package 'foo'"):
        list(classify_package("foo", tmp_path))


# -- the real thing -------------------------------------------------------------------------------

@pytest.mark.network
def test_real_debian_scenes():
    """Six Debian packages (about 370 MB, fetched once into ~/.cache/skprobe/debian)."""
    data = make_event_scenes(34, 17, max_sources_per_class=6)
    assert data.class_names == list(EVENT_CLASSES)
    assert data.X_train.shape == (34, 160000) and data.Y_test.shape == (17, len(EVENT_CLASSES))
    assert (data.Y_train.sum(1) >= 1).all() and (data.Y_train.sum(1) <= 3).all()
    assert [p["package"] for p in data.packages] == list(PACKAGES)
    for p in data.packages:
        assert p["version"] and p["copyright"] and p["licences"]
    used = {n for evs in data.events_train + data.events_test for e in evs for n in e["sources"]}
    assert used <= set(data.licences) and all(data.licences[n] for n in used)
    for label in data.class_names:
        assert data.split["train"][label] and data.split["test"][label]
        assert not set(data.split["train"][label]) & set(data.split["test"][label])
    clips = make_event_clips(17, 17, max_sources_per_class=6)
    assert sorted(clips.y_test.tolist()) == sorted(EVENT_CLASSES)


def test_batched_resampling_matches_one_file_at_a_time():
    from skprobe.audio import resample
    from skprobe.datasets.scenes import _resample_all

    rng = np.random.default_rng(0)
    items = [(rng.standard_normal(n).astype(np.float32), rate)
             for n, rate in [(1000, 22050), (4410, 44100), (333, 22050), (2500, 44100), (800, 8000), (57, 48000)]]
    got = _resample_all(items, 8000, max_batch_samples=5000)  # forces several batches per rate
    for (wav, rate), out in zip(items, got):
        expected = resample(wav, rate, 8000)
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, atol=1e-6)
