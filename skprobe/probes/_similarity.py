"""The best (and worst) match of every prototype over a clip's tokens, with a sparse backward.

The prototype probes score a clip by the largest (the convex gated probe
also by the smallest) similarity of each prototype with any of its tokens:
``(tokens (B, M, D) @ prototypes (K, D).T).amax(dim=1)``. The gradient of a
maximum reaches only the token that attains it, so of the dense ``(B, M, K)``
gradient autograd multiplies back (``O(B M K D)``, as costly as the forward
pass) only ``B K`` entries are non-zero. Here the backward pass multiplies a
sparse CSR matrix of those entries instead: ``O(B K D)``
(``benchmarks/bench_step_kernels.py`` prints both). Where several tokens tie for the maximum
the first takes the whole gradient (autograd's ``amax`` would share it; the
sum is the same when the tied tokens are equal).
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["extreme_similarities", "max_cosine_similarities", "max_similarities"]


def _sparse_matrix(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape)


def _backward(ctx, tokens: torch.Tensor, prototypes: torch.Tensor, pairs) -> tuple:
    """Gradients of ``tokens`` and ``prototypes`` from ``pairs`` of (gradient (B, K), token index (B, K))."""
    b, m, d = tokens.shape
    k = prototypes.shape[0]
    # sums in float32 at least (the forward may run in bfloat16 under autocast), cast back at the end
    dtype = torch.promote_types(torch.promote_types(tokens.dtype, prototypes.dtype), torch.float32)
    device = tokens.device
    flat = tokens.reshape(b * m, d).to(dtype)
    grad_tokens = torch.zeros_like(flat) if ctx.needs_input_grad[0] else None
    grad_prototypes = torch.zeros((k, d), dtype=dtype, device=device) if ctx.needs_input_grad[1] else None
    offsets = torch.arange(b, device=device)[:, None] * m
    for grad, at in pairs:
        if grad is None:
            continue
        grad = grad.to(dtype)
        rows = at + offsets  # (B, K): the row of the flattened tokens each prototype's gradient goes to
        if grad_prototypes is not None:  # (K, B*M) with B entries per row, columns ascending
            crow = torch.arange(0, k * b + 1, b, device=device)
            matrix = _sparse_matrix(crow, rows.T.reshape(-1), grad.T.reshape(-1), (k, b * m))
            grad_prototypes += matrix @ flat
        if grad_tokens is not None:  # (B*M, K): the same entries, by token row
            rows = rows.reshape(-1)
            order = torch.argsort(rows, stable=True)
            crow = torch.zeros(b * m + 1, dtype=torch.long, device=device)
            crow[1:] = torch.cumsum(torch.bincount(rows, minlength=b * m), 0)
            columns = torch.arange(k, device=device).repeat(b)[order]
            matrix = _sparse_matrix(crow, columns, grad.reshape(-1)[order], (b * m, k))
            grad_tokens += matrix @ prototypes.to(dtype)
    return (None if grad_tokens is None else grad_tokens.reshape(b, m, d).to(tokens.dtype),
            None if grad_prototypes is None else grad_prototypes.to(prototypes.dtype))


class _MaxSimilarities(torch.autograd.Function):
    """``(tokens (B, M, D), prototypes (K, D), token_weights (B, M) or None) -> max over tokens (B, K)``
    of ``(tokens @ prototypes.T) * token_weights[..., None]``, with the sparse backward (prototypes only when
    weighted)."""

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, prototypes: torch.Tensor, token_weights: torch.Tensor | None):
        sims = tokens @ prototypes.T
        if token_weights is not None:
            sims.mul_(token_weights[..., None].to(sims.dtype))
        high, high_at = sims.max(dim=1)
        ctx.save_for_backward(tokens, prototypes, high_at, token_weights)
        return high

    @staticmethod
    def backward(ctx, grad_high: torch.Tensor):
        tokens, prototypes, high_at, token_weights = ctx.saved_tensors
        if token_weights is not None:  # the weight of the token each gradient goes to
            grad_high = grad_high.to(token_weights.dtype) * token_weights.gather(1, high_at)
        return (*_backward(ctx, tokens, prototypes, [(grad_high, high_at)]), None)


class _ExtremeSimilarities(torch.autograd.Function):
    """``(tokens (B, M, D), prototypes (K, D)) -> (min, max) over tokens, each (B, K)`` with the sparse backward."""

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, prototypes: torch.Tensor):
        sims = tokens @ prototypes.T
        low, low_at = sims.min(dim=1)
        high, high_at = sims.max(dim=1)
        ctx.save_for_backward(tokens, prototypes, low_at, high_at)
        return low, high

    @staticmethod
    def backward(ctx, grad_low: torch.Tensor, grad_high: torch.Tensor):
        tokens, prototypes, low_at, high_at = ctx.saved_tensors
        return _backward(ctx, tokens, prototypes, [(grad_low, low_at), (grad_high, high_at)])


def _needs_backward(tokens: torch.Tensor, prototypes: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (tokens.requires_grad or prototypes.requires_grad)


def max_similarities(tokens: torch.Tensor, prototypes: torch.Tensor,
                     token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Largest similarity of every prototype over the tokens: ``(tokens @ prototypes.T).amax(dim=-2)``.

    Parameters
    ----------
    tokens : Tensor of shape (..., M, D)
        Tokens; any leading dimensions.
    prototypes : Tensor of shape (K, D)
    token_weights : Tensor of shape (..., M), optional
        A factor on every token's similarities (the inverse token norms give
        cosine similarity without a normalised copy of the tokens). Tokens
        that need a gradient are then handled by autograd.

    Returns
    -------
    Tensor of shape (..., K)

    Examples
    --------
    >>> import torch
    >>> max_similarities(torch.eye(3)[None], torch.tensor([[1.0, 2.0, 0.0]])).tolist()
    [[2.0]]
    """
    weighted = token_weights is not None
    if not _needs_backward(tokens, prototypes) or (weighted and tokens.requires_grad):
        sims = tokens @ prototypes.T
        return (sims * token_weights[..., None] if weighted else sims).amax(dim=-2)
    lead, (m, d) = tokens.shape[:-2], tokens.shape[-2:]
    weights = token_weights.reshape(-1, m) if weighted else None
    return _MaxSimilarities.apply(tokens.reshape(-1, m, d), prototypes, weights).reshape(*lead, len(prototypes))


def max_cosine_similarities(tokens: torch.Tensor, unit_prototypes: torch.Tensor) -> torch.Tensor:
    """Largest cosine similarity of every unit prototype over the tokens, ``(..., M, D) -> (..., K)``.

    Equal to ``max_similarities(F.normalize(tokens, dim=-1), unit_prototypes)``
    without the normalised copy of the tokens: their inverse norms weight the
    similarities instead.

    Examples
    --------
    >>> import torch
    >>> max_cosine_similarities(torch.tensor([[[3.0, 4.0], [0.0, 2.0]]]), torch.eye(2)).tolist()
    [[0.6000000238418579, 1.0]]
    """
    inverse_norms = torch.linalg.vector_norm(tokens, dim=-1).clamp_min(1e-12).reciprocal()
    return max_similarities(tokens, unit_prototypes, inverse_norms)


def extreme_similarities(tokens: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(min, max)`` over tokens of ``tokens (B, M, D) @ prototypes (K, D).T``, each ``(B, K)``.

    Equal to ``sims.amin(1), sims.amax(1)``, with the sparse backward.

    Examples
    --------
    >>> import torch
    >>> low, high = extreme_similarities(torch.eye(3)[None], torch.tensor([[1.0, 2.0, 0.0]]))
    >>> low.tolist(), high.tolist()
    ([[0.0]], [[2.0]])
    """
    if _needs_backward(tokens, prototypes):
        return _ExtremeSimilarities.apply(tokens, prototypes)
    sims = tokens @ prototypes.T
    return sims.amin(dim=1), sims.amax(dim=1)
