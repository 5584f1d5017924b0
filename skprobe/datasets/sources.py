"""Sound sources: labelled recordings from Debian's data packages.

A :class:`SoundSource` is one recording with its event class (or none, for an
ambient bed), the group that must not be split across train and test (a drum
kit, a speaker's language, a footstep material, a key of the keyboard), and
its licence. :func:`debian_sources` lists the recordings of the Debian packages
in :data:`PACKAGES` after fetching them with
:func:`~skprobe.packages.debian.fetch_deb`; the rules below map file paths
to classes. Any other list of sources works with the scene builder too.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..packages.debian import fetch_deb

__all__ = ["SoundSource", "PACKAGES", "EVENT_CLASSES", "debian_sources", "classify_package"]

#: Version of the rules below; part of the cache key of data sets built from them.
CATALOG_VERSION = "1"

#: Debian packages the event-scene benchmark draws from (all architecture "all").
PACKAGES = ("hydrogen-drumkits", "sonic-pi-samples", "tuxpaint-stamps-default",
            "lugaru-data", "minetest-data", "bucklespring-data")

#: The event classes, in the column order of the label matrices.
EVENT_CLASSES = ("kick", "snare", "hihat", "cymbal", "tom", "clap", "cowbell", "hand_drum",
                 "speech", "animal", "bird", "footsteps", "glass", "typing", "metal", "door", "whoosh")


@dataclass(frozen=True)
class SoundSource:
    """One recording usable as an event (``label`` set) or an ambient bed (``label=None``).

    Parameters
    ----------
    path : Path
        Audio file readable by soundfile.
    label : str or None
        Event class; None marks an ambient bed.
    group : str
        Unit of the train/test split: all sources of a group land in the same
        split (a drum kit, a speaker, a material).
    package : str, default=""
        Where the file comes from (a Debian package name, or anything).
    licence : str, default=""
        SPDX-like licence of the file.
    burst_group : str or None, default=None
        Short sources become bursts of hits drawn from the sources sharing
        this key (default: ``group``), e.g. several keys of one keyboard.
    name : str, default=""
        Stable identifier used in metadata and for ordering; defaults to the path.
    """

    path: Path
    label: str | None
    group: str
    package: str = ""
    licence: str = ""
    burst_group: str | None = None
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        if not self.name:
            object.__setattr__(self, "name", str(self.path))
        if not self.group:
            raise ValueError(f"source {self.name}: group must be a non-empty string")

    @property
    def burst_key(self) -> str:
        return self.burst_group if self.burst_group is not None else self.group


def debian_sources(*, dest=None, verbose: bool = False) -> tuple[list[SoundSource], list[dict]]:
    """Fetch :data:`PACKAGES` and list their labelled recordings.

    Returns
    -------
    sources : list of SoundSource
        Events and ambient beds, sorted by name.
    packages : list of dict
        ``package``, ``version``, ``deb_sha256``, ``licences`` (of the
        files listed) and ``copyright`` (the text of the package's copyright
        file) for each package.
    """
    from ..packages.debian import deb_info

    sources, packages = [], []
    for package in PACKAGES:
        root = fetch_deb(package, dest, verbose=verbose)
        found = list(classify_package(package, root))
        info = deb_info(root)
        packages.append({"package": package, "version": info["version"],
                         "deb_sha256": info["deb_sha256"],
                         "licences": sorted({s.licence for s in found}),
                         "copyright": info["copyright_text"]})
        sources.extend(found)
    return sorted(sources, key=lambda s: s.name), packages


def classify_package(package: str, root: Path) -> Iterator[SoundSource]:
    """Labelled sources of one unpacked package (see the rules in this module)."""
    rules = _RULES.get(package)
    if rules is None:
        raise ValueError(f"no classification rules for package {package!r}; known: {sorted(_RULES)}")
    yield from rules(Path(root))


def _source(root: Path, path: Path, package: str, label: str | None, group: str, licence: str,
            burst_group: str | None = None) -> SoundSource:
    rel = path.relative_to(root).as_posix()
    return SoundSource(path, label, f"{package}/{group}", package, licence,
                       None if burst_group is None else f"{package}/{burst_group}", f"{package}:{rel}")


def _first(text: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for label, pattern in table:
        if re.search(pattern, text, flags=re.IGNORECASE):
            return label
    return None


# -- hydrogen-drumkits: label from each kit's drumkit.xml instrument names -----------------------

_DRUMS = (  # order matters: first match wins
    ("cowbell", r"cowbell|agogo|\bcb\d*\b|(dununba|kenkeni|sangban)\d* bell"),
    ("hand_drum", r"bongo|conga|cajon|djembe|dununba|kenkeni|sangban|tabla"),
    ("clap", r"clap|finger ?snap"),
    ("hihat", r"hi.?hat|hh|\bhat\b|hat[ _-]|hatchoke"),
    ("cymbal", r"crash|ride|splash|china|cymbal|\bcc\b|\brc\b"),
    ("kick", r"kick|bass ?drum|\bbd|\bk\b"),
    ("snare", r"snare|\bsn\d*\b|\bsd\b"),
    ("tom", r"tom|\bft\b"),
)
_HYDROGEN_LICENCES = {
    "Audiophob": "CC0-1.0", "BJA_Pacific": "CC-BY-SA-3.0-US", "ColomboAcousticDrumkit": "GPL-2.0-or-later",
    "ElectricEmpireKit": "GPL-2.0-or-later", "ForzeeStereo": "GPL-2.0-only",
    "Gimme A Hand 1.0": "GPL-2.0-only", "HardElectro1": "GPL-2.0-or-later",
    "Millo-Drums_v.1": "GPL-2.0-only", "Millo_MultiLayered2": "GPL-2.0-only",
    "Millo_MultiLayered3": "GPL-2.0-only", "The Black Pearl 1.0": "GPL-2.0-only",
    "VariBreaks": "GPL-2.0-or-later", "circAfrique v4": "CC-BY-SA-3.0", "rumpf_kit_z01_h2": "CC-BY-3.0",
}

# Emiliano Grilli's three kits are versions of one Ludwig set: one group, so they never straddle the split
_HYDROGEN_GROUPS = {"Millo-Drums_v.1": "Millo", "Millo_MultiLayered2": "Millo", "Millo_MultiLayered3": "Millo"}


def _hydrogen(root: Path) -> Iterator[SoundSource]:
    kits = root / "usr/share/hydrogen/data/drumkits"
    for kit in sorted(p for p in kits.iterdir() if (p / "drumkit.xml").is_file()):
        licence = _HYDROGEN_LICENCES.get(kit.name)
        if licence is None:  # a kit added in a later package version: licence unknown here
            continue
        for filename, instrument in _drumkit_files(kit / "drumkit.xml"):
            path = kit / filename
            if instrument.lower().startswith("sample:") or "waterglass" in instrument.lower():
                continue  # unnamed layer (rumpf's spare samples): class unknown; glass: below
            # the instrument name decides; the file name only when the name says nothing
            label = _first(instrument, _DRUMS) or _first(Path(filename).stem.replace("_", " "), _DRUMS)
            if label is not None and path.is_file():
                yield _source(root, path, "hydrogen-drumkits", label, _HYDROGEN_GROUPS.get(kit.name, kit.name),
                              licence)
        for path in sorted(kit.glob("Waterglass*")):  # a struck glass (high, low), five velocities
            group = f"{kit.name}-{path.stem.split('-')[0].lower()}"
            yield _source(root, path, "hydrogen-drumkits", "glass", group, licence)


def _drumkit_files(xml: Path) -> Iterator[tuple[str, str]]:
    """(sample file, instrument name) pairs of a Hydrogen drumkit.xml, each file once."""
    tree = ET.parse(xml)
    seen = set()
    for inst in tree.iter():
        if _tag(inst) != "instrument":
            continue
        name = next((c.text or "" for c in inst if _tag(c) == "name"), "")
        for el in inst.iter():
            if _tag(el) == "filename" and el.text and el.text not in seen:
                seen.add(el.text)
                yield el.text, name


def _tag(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]


# -- sonic-pi-samples (CC0) -----------------------------------------------------------------------

_SONIC_PI = (
    ("kick", r"^(bd_|drum_bass_|drum_heavy_kick|elec_(hollow|soft)_kick)"),
    ("snare", r"^(sn_|drum_snare_|elec_(hi|mid|lo|filt)?_?snare)"),
    ("hihat", r"^drum_cymbal_(closed|open|pedal)"),
    ("cymbal", r"^(drum_cymbal_(hard|soft)|drum_splash_|elec_cymbal)"),
    ("tom", r"^(drum_tom_|elec_fuzz_tom)"),
    ("clap", r"^perc_snap"),
    ("cowbell", r"^drum_cowbell"),
    ("hand_drum", r"^tabla_"),
    ("bird", r"^misc_crow"),
    ("door", r"^perc_door"),
    ("whoosh", r"^(perc_swoosh|perc_swash|ambi_swoosh)"),
    ("bed", r"^(ambi_(drone|haunted_hum|glass_hum|lunar_land|sauna|soft_buzz)|vinyl_hiss)"),
)


def _sonic_pi(root: Path) -> Iterator[SoundSource]:
    for path in sorted((root / "usr/share/sonic-pi/samples").glob("*.flac")):
        label = _first(path.stem, _SONIC_PI)
        if label == "bed":
            yield _source(root, path, "sonic-pi-samples", None, path.stem, "CC0-1.0")
        elif label is not None:
            # drum sounds of one kit stay together; other samples are distinct recordings
            group = {"hand_drum": "tabla", "bird": path.stem, "door": path.stem,
                     "whoosh": path.stem}.get(label, "kit")
            yield _source(root, path, "sonic-pi-samples", label, group, "CC0-1.0")


# -- tuxpaint-stamps-default (GPL-2): spoken descriptions and animal calls -----------------------

_TUX_DESC = re.compile(r"_desc(?:_([a-z]{2,3}))?\.ogg$")


def _tuxpaint(root: Path) -> Iterator[SoundSource]:
    stamps = root / "usr/share/tuxpaint/stamps"
    for path in sorted(stamps.rglob("*.ogg")):
        rel = path.relative_to(stamps)
        desc = _TUX_DESC.search(path.name)
        if desc:  # one speaker per language: the language is the split group
            lang = desc.group(1) or "en"
            yield _source(root, path, "tuxpaint-stamps-default", "speech", f"lang-{lang}", "GPL-2.0-only")
            continue
        parts = rel.parts
        stem = path.stem.split("_")[0].rstrip("0123456789").lower()
        if parts[:2] in (("animals", "mammals"), ("animals", "marsupials")):
            # near-duplicates (cow / cow_white, goat / ram) share a folder or a stem
            group = parts[2] if len(parts) > 3 else stem
            yield _source(root, path, "tuxpaint-stamps-default", "animal", group, "GPL-2.0-only")
        elif parts[:2] == ("animals", "birds"):
            yield _source(root, path, "tuxpaint-stamps-default", "bird", stem, "GPL-2.0-only")
        elif parts[:2] == ("household", "dishes"):
            yield _source(root, path, "tuxpaint-stamps-default", "glass", stem, "GPL-2.0-only")
        elif rel.as_posix() in ("household/tools/hammer.ogg", "household/tools/mallet_metal.ogg"):
            yield _source(root, path, "tuxpaint-stamps-default", "metal", "tools", "GPL-2.0-only")
        elif rel.as_posix() == "hobbies/music/percussion/cymbal_crash.ogg":
            yield _source(root, path, "tuxpaint-stamps-default", "cymbal", "music", "GPL-2.0-only")
        elif rel.as_posix() == "hobbies/music/percussion/drum_tomtom_floor.ogg":
            yield _source(root, path, "tuxpaint-stamps-default", "tom", "music", "GPL-2.0-only")


# -- lugaru-data (CC-BY-SA-3.0) ------------------------------------------------------------------

_LUGARU = (
    ("animal", r"^(Bark|Growl|Snarl)", "wolf"),
    ("bird", r"^Hawk$", "hawk"),
    ("footsteps", r"^FootStep(Grass|Snow|Stone)", None),
    ("metal", r"^(Clank)\d$|^(MetalHit)$", None),
    ("whoosh", r"^((High|Low|Mid|Move)?Whoosh|KnifeSwish)$", None),
    (None, r"^(Wind|DesertAmbient)$", None),
)


def _lugaru(root: Path) -> Iterator[SoundSource]:
    for path in sorted((root / "usr/share/games/lugaru/Sounds").glob("*.ogg")):
        for label, pattern, group in _LUGARU:
            m = re.search(pattern, path.stem)
            if m:
                group = group or next((g for g in m.groups() if g), path.stem).lower()
                yield _source(root, path, "lugaru-data", label, group, "CC-BY-SA-3.0")
                break


# -- minetest-data (CC-BY-SA-3.0; door sounds CC-BY-3.0) -----------------------------------------

_MINETEST = (
    ("footsteps", r"^default_(dirt|grass|gravel|hard|ice|metal|sand|snow|wood)_footstep"),
    ("glass", r"^default_break_glass"),
    ("metal", r"^default_(dug_metal|dig_metal|place_node_metal)"),
    ("door", r"^(doors|xpanes)_(\w+?)_(open|close)$"),
    (None, r"^(?:env_sounds_(water|lava)|(fire)_(?:fire|small|large)|default_(furnace)_active)$"),
)


def _minetest(root: Path) -> Iterator[SoundSource]:
    base = root / "usr/share/games/minetest/games/minetest_game/mods"
    for path in sorted(base.glob("*/sounds/*.ogg")):
        stem = path.stem.split(".")[0]
        for label, pattern in _MINETEST:
            m = re.search(pattern, stem)
            if not m:
                continue
            licence = "CC-BY-3.0" if path.parts[-3] == "doors" else "CC-BY-SA-3.0"
            if label == "footsteps":
                group = m.group(1)
            elif label == "door":
                group = m.group(2)
            elif label is None:
                group = next(g for g in m.groups() if g)
            else:
                group = label
            yield _source(root, path, "minetest-data", label, group, licence)
            break


# -- bucklespring-data (GPL-2+): one IBM Model M keyboard, press and release per key --------------

def _bucklespring(root: Path) -> Iterator[SoundSource]:
    for path in sorted((root / "usr/share/buckle/wav").glob("*.wav")):
        key = path.stem.split("-")[0]
        yield _source(root, path, "bucklespring-data", "typing", f"key-{key}", "GPL-2.0-or-later",
                      burst_group="keyboard")


_RULES: dict[str, Callable[[Path], Iterator[SoundSource]]] = {
    "hydrogen-drumkits": _hydrogen, "sonic-pi-samples": _sonic_pi,
    "tuxpaint-stamps-default": _tuxpaint, "lugaru-data": _lugaru,
    "minetest-data": _minetest, "bucklespring-data": _bucklespring,
}
