"""Tokens of a benchmark run: the encoder as a transformer, extraction through the token store, the layers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.utils import Bunch

from .._config import data_home
from ..datasets.lazy import ClipPaths
from ..encoders import get_encoder_spec
from ..extraction import FrozenEncoderTransformer
from .config import BenchmarkConfig

__all__ = ["encoder_for", "extract_tokens", "resolve_multi_layers"]


def encoder_for(config: BenchmarkConfig, layers, sample_rate: int | None = None,
             output: str = "array") -> FrozenEncoderTransformer:
    """The run's encoder as an unfitted :class:`FrozenEncoderTransformer` on ``layers``, storing tokens under
    ``<data home>/tokens``."""
    return FrozenEncoderTransformer(
        encoder=config.encoder, checkpoint=config.checkpoint, layers=layers,
        sample_rate=sample_rate or get_encoder_spec(config.encoder).sample_rate,
        batch_size=config.batch_size, compile=config.compile, device=config.device, store=str(data_home() / "tokens"),
        output=output, verbose=config.verbose,
    )


def extract_tokens(config: BenchmarkConfig, data: Bunch, layers: Sequence[int] | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, FrozenEncoderTransformer]:
    """Token maps of the train and test clips, through the token store under ``<data home>/tokens``.

    ``layers``: a list of layers of one token-map shape, extracted in one
    pass as ``(n_clips, n_layers, n_tokens, dim)``; by default ``config.layer``
    as ``(n_clips, n_tokens, dim)``. Files (a folder data set) stream into the
    store and come back store-backed (``output="memmap"``), so memory does not
    grow with the number of clips.
    """
    paths = isinstance(data.X_train, ClipPaths)
    encoder = encoder_for(config, config.layer if layers is None else list(layers), data.sample_rate,
                       output="memmap" if paths else "array")
    X_train = encoder.fit_transform(data.X_train if paths else list(data.X_train))
    X_test = encoder.transform(data.X_test if paths else list(data.X_test))
    return X_train, X_test, encoder


def resolve_multi_layers(config: BenchmarkConfig) -> list[int] | None:
    """The layers of the multi-layer probe: ``config.layers`` resolved, or None without them.

    ``"all"`` is every layer whose token map has the shape of ``config.layer``'s
    (for a ViT all its blocks; for YAMNet's default last layer the two
    1024-dimensional ones). A list is checked (range, one shape) and sorted.
    No weights are read except for encoders whose layout needs them.
    """
    if config.layers is None:
        return None
    if config.layers != "all":
        return encoder_for(config, list(config.layers)).fit(None).layers_
    reference = encoder_for(config, config.layer).fit(None)
    n_layers = encoder_for(config, -1).fit(None).layers_[0] + 1
    shape = (reference.n_tokens_, reference.dim_)
    return [layer for layer in range(n_layers)
            if (lambda e: (e.n_tokens_, e.dim_))(encoder_for(config, layer).fit(None)) == shape]
