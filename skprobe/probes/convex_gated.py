"""Convex gated probe (CGP) of the BAT paper: prototypes over a learned convex mixture of encoder layers."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array
from torch import nn

from ._layers import flatten_layers
from ._similarity import extreme_similarities
from ._tokens import is_token_array
from .base import (
    _TOKEN_DTYPES,
    AUTO_CENTER_COHERENCE,
    NORMALIZATIONS,
    BaseProbeClassifier,
    ProbeNetwork,
    TokenMoments,
    direction_coherence,
    normalisation_stats,
    offset_ratio,
    store_parameters,
    with_shared_parameters_doc,
)

__all__ = ["ConvexGatedProbeClassifier", "ConvexGatedHead", "LayeredProbeNetwork", "auto_n_prototypes",
           "extreme_similarities", "gated_mix", "layer_moments"]

#: ``n_prototypes="auto"``: this many prototypes per class ...
AUTO_PROTOTYPES_PER_CLASS = 20
#: ... and at most this many in all (BAT's 10,000 on AudioSet).
AUTO_MAX_PROTOTYPES = 10_000


def auto_n_prototypes(n_classes: int) -> int:
    """``n_prototypes="auto"``: 20 per class, at most 10,000 (BAT's number for AudioSet's 527 classes).

    >>> auto_n_prototypes(10), auto_n_prototypes(527)
    (200, 10000)
    """
    return int(min(AUTO_MAX_PROTOTYPES, AUTO_PROTOTYPES_PER_CLASS * n_classes))


#: Values of the float32 temporaries of the layer mixing (16 MB): small enough to be reused by the allocator
#: from step to step instead of being mapped afresh (page faults) for every batch.
_MIX_CHUNK_VALUES = 1 << 22


def _prepared(tokens: torch.Tensor, layer: int, shift: torch.Tensor | None, scale: torch.Tensor | None,
              dtype: torch.dtype) -> torch.Tensor:
    """Layer ``layer`` of ``tokens (b, L, N, D)``, shifted and scaled, as a fresh ``dtype`` tensor ``(b, N, D)``."""
    x = tokens[:, layer]
    if shift is not None:
        x = torch.sub(x, shift[layer]).to(dtype)  # the difference is a fresh tensor (float32 for float16 tokens)
    else:
        x = x.to(dtype, copy=True)
    if scale is not None:
        x.div_(scale[layer])
    return x


class _GatedMix(torch.autograd.Function):
    """``sum_l w_l u_l``, ``u_l`` the unit-length tokens of layer ``l`` after shift and scale; grad for ``w`` only.

    ``(w (L,), tokens (B, L, N, D), shift (L, D) or None, scale (L, D) or None) -> (B, N, D)``. Works a
    chunk of clips and one layer at a time, so no normalised (or float32) copy of all the tokens exists: the
    temporaries hold about :data:`_MIX_CHUNK_VALUES` values, and the backward pass recomputes them.
    """

    @staticmethod
    def forward(ctx, weights, tokens, shift, scale):
        b, n_layers, n, d = tokens.shape
        dtype = torch.promote_types(torch.promote_types(tokens.dtype, weights.dtype), torch.float32)
        out = torch.empty((b, n, d), dtype=dtype, device=tokens.device)
        step = max(1, _MIX_CHUNK_VALUES // max(1, n * d))
        w = weights.to(dtype)
        for b0 in range(0, b, step):
            acc = out[b0 : b0 + step].zero_()
            for layer in range(n_layers):
                x = _prepared(tokens[b0 : b0 + step], layer, shift, scale, dtype)
                inverse = w[layer] / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(1e-12)
                acc.addcmul_(x, inverse)
        ctx.save_for_backward(weights, tokens, shift, scale)
        return out

    @staticmethod
    def backward(ctx, grad):
        weights, tokens, shift, scale = ctx.saved_tensors
        b, n_layers, n, d = tokens.shape
        dtype = grad.dtype if grad.dtype == torch.float64 else torch.float32
        grad = grad.to(dtype)
        total = torch.zeros(n_layers, dtype=torch.float64, device=tokens.device)
        step = max(1, _MIX_CHUNK_VALUES // max(1, n * d))
        for b0 in range(0, b, step):
            g = grad[b0 : b0 + step]
            for layer in range(n_layers):
                x = _prepared(tokens[b0 : b0 + step], layer, shift, scale, dtype)
                norms = torch.linalg.vector_norm(x, dim=-1).clamp_min_(1e-12)
                total[layer] += (x.mul_(g).sum(dim=-1) / norms).sum().double()
        return total.to(weights.dtype), None, None, None


def gated_mix(weights: torch.Tensor, tokens: torch.Tensor, shift: torch.Tensor | None = None,
              scale: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_l weights_l * u_l``, ``u_l = (x_l - shift_l) / scale_l`` scaled to unit length per token.

    ``tokens (B, L, N, D) -> (B, N, D)`` (float32 at least). Differentiable in
    ``weights``; without a gradient for the tokens it makes no normalised copy
    of them (see :class:`_GatedMix`).

    >>> import torch
    >>> tokens = torch.tensor([[[[3.0, 4.0]], [[0.0, 2.0]]]])  # 1 clip, 2 layers, 1 token, 2 dims
    >>> [round(v, 4) for v in gated_mix(torch.tensor([0.5, 0.5]), tokens)[0, 0].tolist()]  # (0.6, 0.8) / 2 + (0, 1) / 2
    [0.3, 0.9]
    """
    if tokens.requires_grad or (shift is not None and shift.requires_grad) or (
            scale is not None and scale.requires_grad):
        x = tokens if shift is None else tokens - shift[:, None]
        x = x if scale is None else x / scale[:, None]
        return torch.einsum("l,blnd->bnd", weights.to(x.dtype), F.normalize(x, dim=-1))
    return _GatedMix.apply(weights, tokens, shift, scale)


class ConvexGatedHead(nn.Module):
    """Float prototypes matched against a softmax-gated mixture of L2-normalised layers; three features each.

    A gate ``a`` over the ``L`` layers (initialised to ones) gives convex
    weights ``alpha = softmax(a)``; every token of every layer is scaled to
    unit length and the layers are mixed, ``z = sum_l alpha_l z_l / |z_l|``
    (not re-normalised). ``K`` float prototypes (init N(0, 0.02^2)) are
    scaled to unit length in every pass; each mixed patch token's similarity
    to each prototype is pooled three ways, ``[min over patches, prefix
    token, max over patches]`` (the first prefix token, mixed the same way;
    without prefix tokens ``[min, mean, max]``), interleaved per prototype
    into ``3K`` features, dropped out, and mapped to the logits by
    ``Linear(3K -> C)``.

    Shapes: ``prefix (B, L, P, D)``, ``patches (B, L, M, D) -> mixed (B, M, D) -> similarities (B, M, K) ->
    features (B, 3K) -> logits (B, C)``.
    """

    def __init__(self, dim: int, n_outputs: int, n_layers: int, n_prototypes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.gate = nn.Parameter(torch.ones(n_layers))
        self.prototypes = nn.Parameter(torch.randn(n_prototypes, dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(3 * n_prototypes, n_outputs)

    @staticmethod
    def centres_tokens(offset_ratio: float, coherence: float) -> bool:
        """``normalize_tokens="auto"``: centre when the tokens crowd around one direction (as the prototypical probe)."""
        return coherence > AUTO_CENTER_COHERENCE

    def layer_weights(self) -> torch.Tensor:
        """The convex weights of the layers, ``softmax(gate)``, ``(L,)``."""
        return torch.softmax(self.gate, dim=0)

    def mix(self, tokens: torch.Tensor, shift: torch.Tensor | None = None,
            scale: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, N, D) -> (B, N, D)``: the gate's mixture of the unit-length tokens of each layer.

        ``sum_l alpha_l u_l / |u_l|`` with ``u_l = (x_l - shift_l) / scale_l``
        (the network's per-layer normalisation, applied on the way: see
        :func:`gated_mix`).
        """
        return gated_mix(self.layer_weights(), tokens, shift, scale)

    def unit_prototypes(self) -> torch.Tensor:
        """The prototypes scaled to unit length, ``(K, D)``."""
        return F.normalize(self.prototypes, dim=-1)

    def similarities(self, patches: torch.Tensor) -> torch.Tensor:
        """Similarity of every mixed patch token with every unit prototype, ``(B, M, K)``."""
        return self.mix(patches) @ self.unit_prototypes().T

    def features(self, prefix: torch.Tensor, patches: torch.Tensor, shift: torch.Tensor | None = None,
                 scale: torch.Tensor | None = None) -> torch.Tensor:
        """The ``3K`` features ``[min_k, prefix_k or mean_k, max_k]`` per prototype ``k``, ``(B, 3K)``."""
        prototypes = self.unit_prototypes()
        mixed = self.mix(patches, shift, scale)
        low, high = extreme_similarities(mixed, prototypes)
        if prefix.shape[2]:
            middle = self.mix(prefix[:, :, :1], shift, scale)[:, 0] @ prototypes.T
        else:
            middle = mixed.mean(dim=1) @ prototypes.T
        return torch.stack([low, middle, high], dim=-1).flatten(1)

    def frame_logits(self, prefix: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``(B, T, C)`` of normalised tokens on their grid ``(B, L, T, F, D)``.

        The frame-wise counterpart of :meth:`features`: the layers are mixed
        by the gate, and each prototype's similarities are pooled over the
        frame's ``F`` frequency tokens only (min and max; the prefix token's
        similarity, the same for every frame, or without prefix tokens the
        frame's mean), then the same ``Linear(3K -> C)`` maps each frame's
        features to logits. A single frame holding every patch token gets
        exactly the clip's logits.
        """
        b, n_layers, n_time, n_freq, dim = grid.shape
        prototypes = self.unit_prototypes()
        mixed = self.mix(grid.reshape(b, n_layers, n_time * n_freq, dim)).reshape(b, n_time, n_freq, dim)
        similarities = mixed @ prototypes.T  # B, T, F, K
        low, high = similarities.amin(dim=2), similarities.amax(dim=2)
        if prefix.shape[2]:
            middle = (self.mix(prefix[:, :, :1])[:, 0] @ prototypes.T)[:, None].expand_as(low)
        else:
            middle = mixed.mean(dim=2) @ prototypes.T
        return self.linear(torch.stack([low, middle, high], dim=-1).flatten(2))

    def forward(self, prefix: torch.Tensor, patches: torch.Tensor, shift: torch.Tensor | None = None,
                scale: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, C)`` of raw or normalised tokens; ``shift`` / ``scale`` ``(L, D)`` normalise them on the way."""
        return self.linear(self.dropout(self.features(prefix, patches, shift, scale)))


def layer_moments(batches, n_layers: int, prefix_tokens: int, directions: bool = False) -> list[TokenMoments]:
    """Per-layer :class:`~skprobe.probes.base.TokenMoments` of the patch tokens, in one pass.

    ``batches`` yield clips ``(b, L * T, D)`` (layers one after another on the
    token axis); the first ``prefix_tokens`` tokens of each layer are left out
    (all are used when no patch token is left). Accumulated in float64 about
    the first batch's per-layer mean, like :func:`~skprobe.probes.base.raw_moments`.
    """
    total = total_sq = shift = unit_total = None
    count = 0
    for block in batches:
        block = block.reshape(len(block), n_layers, -1, block.shape[-1])
        if block.shape[2] > prefix_tokens:
            block = block[:, :, prefix_tokens:]
        dtype = torch.float64 if block.dtype == torch.float64 else torch.float32
        # layer-major rows (L, b * T, D): every sum below is one batched matrix product over contiguous rows
        # (a reduction over the clip and token axes of (b, L, T, D) directly is 8 times slower on the CPU)
        x = block.transpose(0, 1).to(dtype).reshape(n_layers, -1, block.shape[-1])
        ones = torch.ones(n_layers, 1, x.shape[1], dtype=dtype, device=x.device)
        if shift is None:
            shift = x.mean(dim=1, keepdim=True)  # L, 1, D
            total = torch.zeros(n_layers, x.shape[-1], dtype=torch.float64, device=x.device)
            total_sq, unit_total = torch.zeros_like(total), torch.zeros_like(total)
        if directions:
            inverse = torch.linalg.vector_norm(x, dim=-1).clamp_min_(1e-12).reciprocal_()
            unit_total += torch.bmm(inverse.unsqueeze(1), x).squeeze(1).double()
        centred = x - shift
        total += torch.bmm(ones, centred).squeeze(1).double()
        total_sq += torch.bmm(ones, centred.square_()).squeeze(1).double()
        count += x.shape[1]
    mean = shift[:, 0].double() + total / count
    var = ((total_sq - total.square() / count) / count).clamp(min=0)
    return [TokenMoments(mean[i], var[i], unit_total[i] / count if directions else None) for i in range(n_layers)]


class LayeredProbeNetwork(ProbeNetwork):
    """:class:`~skprobe.probes.base.ProbeNetwork` for clips of ``L`` layers laid one after another on the token axis.

    Normalises every layer with its own statistics (:meth:`calibrate`) and
    hands the head ``prefix (B, L, P, D)`` and ``patches (B, L, M, D)``. The
    head compares directions only, so only what changes a direction is
    applied: the shift of ``"center"`` and ``"standard"`` and the
    per-dimension scales of ``"standard"`` (one scale for all of a layer's
    tokens, as ``"scale"`` and ``"center"`` divide by, changes no cosine
    similarity).
    ``normalize="auto"`` centres every layer when the layers' mean
    :func:`~skprobe.probes.base.direction_coherence` passes the head's rule,
    and otherwise only rescales them; ``token_coherence`` keeps that mean and
    ``layer_coherence`` each layer's value.
    """

    def __init__(self, head: nn.Module, prefix_tokens: int, normalize: str = "none", n_layers: int = 1) -> None:
        super().__init__(head, prefix_tokens, normalize)
        self.n_layers = n_layers
        self.layer_coherence: list[float] | None = None

    def calibrate(self, tokens, chunk: int | None = None) -> LayeredProbeNetwork:
        """Per-layer normalisation statistics from the training tokens ``(n, L * T, D)``.

        Read ``chunk`` clips at a time (by default about 16 M values: the clips
        of L layers are L times bigger than those of one).
        """
        if self.normalize == "none":
            return self
        if chunk is None:
            chunk = max(1, min(256, _MIX_CHUNK_VALUES * 4 // max(1, tokens.shape[1] * tokens.shape[2])))
        auto = self.normalize == "auto"
        batches = (tokens[i : i + chunk] for i in range(0, len(tokens), chunk))
        moments = layer_moments(batches, self.n_layers, self.prefix_tokens, directions=auto)
        if auto:
            self.layer_coherence = [direction_coherence(m.mean, m.unit_mean) for m in moments]
            self.token_coherence = float(np.mean(self.layer_coherence))
            self.token_offset_ratio = float(np.mean([offset_ratio(m.mean, m.var) for m in moments]))
            centre = getattr(self.head, "centres_tokens", self.centres_tokens)
            self.normalize = "center" if centre(self.token_offset_ratio, self.token_coherence) else "scale"
        stats = [normalisation_stats(m.mean, m.var, self.normalize) for m in moments]
        # The head compares directions only: a scale common to a layer's tokens changes nothing, so only
        # the shift ("center", "standard") and per-dimension scales ("standard") are kept and applied.
        self.token_mean = None if self.normalize == "scale" else torch.stack([s[0] for s in stats])  # L, D
        self.token_scale = torch.stack([s[1] for s in stats]) if self.normalize == "standard" else None
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # the head normalises each layer on the way (no normalised copy of the batch)
        tokens = tokens.reshape(len(tokens), self.n_layers, -1, tokens.shape[-1])
        prefix, patches = tokens[:, :, : self.prefix_tokens], tokens[:, :, self.prefix_tokens :]
        return self.head(prefix, patches, self.token_mean, self.token_scale)

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32, per-layer normalised ``(prefix (B, L, P, D), patches (B, L, M, D))`` (for inspection)."""
        tokens = tokens.reshape(len(tokens), self.n_layers, -1, tokens.shape[-1])
        if self.token_mean is not None:  # one pass: the difference with a float32 mean is a fresh float32 tensor
            tokens = torch.sub(tokens, self.token_mean[:, None])
            if self.token_scale is not None:
                tokens.div_(self.token_scale[:, None])
        else:
            tokens = tokens.float()
        return tokens[:, :, : self.prefix_tokens], tokens[:, :, self.prefix_tokens :]


@with_shared_parameters_doc
class ConvexGatedProbeClassifier(BaseProbeClassifier):
    """Convex gated probe (CGP) over several encoder layers (BAT, Ghaffari, Rauch et al., ICML 2026).

    The multi-layer probe of the authors' follow-up to "Unmute the Patch
    Tokens" (arXiv 2602.16305, where it gains 1.4 to 2.5 mAP over the
    binarized prototypical probe on AudioSet-20k). It reads the token maps
    of ``L`` layers, ``X`` of shape ``(n_clips, n_layers, n_tokens, dim)``
    (:class:`~skprobe.FrozenEncoderTransformer` with a list of ``layers``),
    scales every token to unit length and mixes the layers with convex
    weights ``softmax(gate)`` learned with the rest. ``K`` float prototypes
    are matched against the mixed patch tokens by cosine similarity, and
    each prototype gives three features, its smallest and largest
    similarity over the patch tokens and its similarity to the mixed
    ``[cls]`` token (the mean over the patches when there is no prefix
    token); after dropout, ``Linear(3K -> C)`` gives the logits. The fitted
    ``layer_weights_`` show where in depth the classes' evidence sits.

    A 3-D ``X`` ``(n_clips, n_tokens, dim)`` is one layer (the gate is then
    1): a float-prototype probe with the three features per prototype. A
    2-D ``X`` is one token per clip.

    Parameters
    ----------
    n_prototypes : int or "auto", default="auto"
        ``K``, prototypes shared by all classes. ``"auto"`` is 20 per class,
        at most 10,000 (BAT's number for AudioSet).
    dropout : float, default=0.2
        Dropout on the ``3K`` features during training (BAT's value).
    learning_rate : float or "auto", default="auto"
        AdamW learning rate. ``"auto"`` is ``10 / (3K)``, the rule of the
        linear layer's fan-in (``3K``): 9.8e-3 for 340 prototypes (17
        classes), 3.3e-4 for 10,000 (BAT trains those at 1e-3).
    weight_decay : float, default=0.05
        Applies to the linear layer's weights only, not to the prototypes,
        the gate or the bias (BAT's setting).
    {shared_parameters}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Token embedding dimension ``D``.
    n_layers_ : int
        Layers per clip seen in ``fit`` (1 for 2-D and 3-D ``X``);
        ``predict`` needs the same number.
    n_prototypes_ : int
        ``K``.
    layer_weights_ : ndarray of shape (n_layers_,)
        The gate's convex weights of the layers, ``softmax(gate)`` (sum 1),
        in the order of ``X``'s layer axis.
    {shared_attributes}

    Notes
    -----
    ``normalize_tokens`` applies per layer, with each layer's own
    statistics (the layers of one encoder differ in offset and scale).
    ``"auto"`` centres every layer when the layers' mean direction
    coherence exceeds 0.67 (the prototypical probe's rule), and otherwise
    only rescales them, which does not change a cosine similarity.

    Examples
    --------
    >>> import numpy as np
    >>> from skprobe import ConvexGatedProbeClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 3, 8, 16)).astype("float32")  # 60 clips, 3 layers, 8 tokens, dim 16
    >>> Y = (X[:, 1, :, :3].max(axis=1) > 1.5).astype(int)  # 3 labels, visible in layer 1
    >>> clf = ConvexGatedProbeClassifier(n_prototypes=12, max_iter=5, random_state=0).fit(X, Y)
    >>> clf.layer_weights_.shape, clf.predict_proba(X[:2]).shape
    ((3,), (2, 3))
    """

    _parameter_constraints = {
        **BaseProbeClassifier._parameter_constraints,
        "n_prototypes": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "normalize_tokens": [StrOptions({"auto", *NORMALIZATIONS})],
    }
    _auto_min_steps = 720
    _auto_lr_times_fan_in = 10.0
    _no_decay = ("prototypes", "gate", "linear.bias")

    def __init__(
        self,
        n_prototypes: int | str = "auto",
        dropout: float = 0.2,
        *,
        prefix_tokens: int = 0,
        loss: str = "auto",
        asl_gamma_neg: float = 4.0,
        asl_gamma_pos: float = 1.0,
        asl_clip: float = 0.05,
        learning_rate: float | str = "auto",
        weight_decay: float = 0.05,
        max_iter: int | str = "auto",
        batch_size: int | str = "auto",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        tol: float = 1e-4,
        normalize_tokens: str = "auto",
        device: str = "auto",
        random_state=None,
        verbose: int = 0,
    ) -> None:
        store_parameters(self, locals())

    # -- input -----------------------------------------------------------------------
    def _prepare_tokens(self, X, *, reset: bool):
        ndim = getattr(X, "ndim", None) if not isinstance(X, (list, tuple)) else np.ndim(X)
        if ndim is not None and ndim > 4:
            raise ValueError(
                f"X must be (n_clips, n_layers, n_tokens, dim), (n_clips, n_tokens, dim) or (n_clips, dim) "
                f"token arrays, got a {ndim}-D array of shape {np.shape(X)}"
            )
        n_layers = 1
        if ndim == 4:
            if not is_token_array(X, ndims=(4,)):
                X = check_array(X, allow_nd=True, dtype=_TOKEN_DTYPES, input_name="X")
                if min(X.shape) < 1:
                    raise ValueError(f"X needs at least one layer, token and dimension per clip, got shape {X.shape}")
            n_layers, n_tokens = int(X.shape[1]), int(X.shape[2])
            if n_tokens <= self.prefix_tokens:
                raise ValueError(
                    f"X has {n_tokens} token(s) per layer but prefix_tokens={self.prefix_tokens}: no patch tokens "
                    "are left to pool over; lower prefix_tokens or pass the patch tokens"
                )
            X = flatten_layers(X)
        if reset:
            self._set_fitted(n_layers_=n_layers)
        elif n_layers != self.n_layers_:
            given = f"{n_layers} layers per clip (a {ndim}-D X)" if ndim == 4 else f"one layer (a {ndim}-D X)"
            raise ValueError(
                f"X has {given}, but {type(self).__name__} was fitted on {self.n_layers_} layer(s) per clip "
                "(n_layers_); pass the tokens of the same layers, shaped (n_clips, n_layers, n_tokens, dim)"
            )
        return X

    # -- network ---------------------------------------------------------------------
    def _n_prototypes(self, n_outputs: int) -> int:
        return auto_n_prototypes(n_outputs) if self.n_prototypes == "auto" else int(self.n_prototypes)

    def _fan_in(self, dim: int) -> int:
        return 3 * self._n_prototypes(len(self.classes_))

    def _build_head(self, dim: int, n_outputs: int) -> nn.Module:
        self._set_fitted(n_prototypes_=self._n_prototypes(n_outputs))
        return ConvexGatedHead(dim, n_outputs, self.n_layers_, self.n_prototypes_, self.dropout)

    def _build_network(self, dim: int, n_outputs: int) -> ProbeNetwork:
        return LayeredProbeNetwork(self._build_head(dim, n_outputs), self.prefix_tokens, self.normalize_tokens,
                                   self.n_layers_)

    def fit(self, X, y, groups=None):
        """Train the probe on token maps of one or several layers.

        Parameters
        ----------
        X : array-like of shape (n_clips, n_layers, n_tokens, dim), (n_clips, n_tokens, dim) or (n_clips, dim)
            Frozen-encoder tokens (float16/32/64); the layers of one clip
            must have token maps of one shape. The token count may differ
            between ``fit`` and ``predict``, the number of layers may not.
        y : array-like of shape (n_clips,) or (n_clips, n_classes)
            Class labels (any type) or a 0/1 multi-label indicator matrix.
        groups : array-like of shape (n_clips,), optional
            Group label of every clip (the recording it was cut from): the
            validation clips of ``early_stopping`` are whole groups.

        Returns
        -------
        self
        """
        return super().fit(X, y, groups)

    def _fitted_attributes(self, module, result, plan, n_clips: int) -> dict:
        with torch.no_grad():
            weights = module.head.layer_weights().double().numpy()
        return {**super()._fitted_attributes(module, result, plan, n_clips), "layer_weights_": weights}

    # -- inspection ------------------------------------------------------------------
    def prototype_similarities(self, X) -> np.ndarray:
        """Cosine similarity of every mixed patch token with every prototype.

        Returns
        -------
        ndarray of shape (n_clips, n_patches, n_prototypes)
        """
        return self._head_outputs(X, lambda head, patches: head.similarities(patches))
