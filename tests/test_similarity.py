"""The prototype similarities' sparse backward equals autograd's dense one."""

import pytest
import torch
import torch.nn.functional as F

from skprobe.probes._similarity import extreme_similarities, max_similarities
from skprobe.probes.prototypical import PrototypeHead


def _dense_gradients(tokens, protos, weights, reduce):
    tokens = tokens.detach().clone().requires_grad_(tokens.requires_grad)
    protos = protos.detach().clone().requires_grad_()
    sims = tokens @ protos.T
    outputs = reduce(sims)
    sum(((o * w).sum() for o, w in zip(outputs, weights))).backward()
    return outputs, tokens.grad, protos.grad


@pytest.mark.parametrize("tokens_need_grad", [False, True])
def test_extreme_similarities_match_dense_min_max_and_their_gradients(tokens_need_grad):
    """Values and both gradients equal autograd's through amin / amax (no ties), and pass gradcheck."""
    torch.manual_seed(0)
    tokens = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=tokens_need_grad)
    protos = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    low, high = extreme_similarities(tokens, protos)
    ((low * weights[0]).sum() + (high * weights[1]).sum()).backward()
    expected, token_grad, proto_grad = _dense_gradients(tokens, protos, weights, lambda s: (s.amin(1), s.amax(1)))
    torch.testing.assert_close(low, expected[0])
    torch.testing.assert_close(high, expected[1])
    torch.testing.assert_close(protos.grad, proto_grad)
    if tokens_need_grad:
        torch.testing.assert_close(tokens.grad, token_grad)
    assert torch.autograd.gradcheck(lambda a, b: extreme_similarities(a, b), (tokens, protos))


def test_max_similarities_match_amax_with_leading_dimensions():
    """(B, T, F, D) tokens reduce over F, as frame scores need; gradients as autograd's; gradcheck passes."""
    torch.manual_seed(1)
    tokens = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    protos = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 3, 4, dtype=torch.float64)
    out = max_similarities(tokens, protos)
    assert out.shape == (2, 3, 4)
    (out * weight).sum().backward()
    expected, token_grad, proto_grad = _dense_gradients(tokens, protos, [weight], lambda s: (s.amax(-2),))
    torch.testing.assert_close(out, expected[0])
    torch.testing.assert_close(protos.grad, proto_grad)
    torch.testing.assert_close(tokens.grad, token_grad)
    assert torch.autograd.gradcheck(lambda a, b: max_similarities(a, b), (tokens, protos))
    with torch.no_grad():
        torch.testing.assert_close(max_similarities(tokens, protos), expected[0])


def test_tied_tokens_pass_the_whole_gradient_once():
    """Two equal tokens tie for the maximum: the gradient reaches the prototype once, as autograd's shared one sums."""
    token = torch.randn(1, 1, 4, dtype=torch.float64)
    tokens = torch.cat([token, token, -token], dim=1)
    protos = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    max_similarities(tokens, protos).sum().backward()
    _, _, proto_grad = _dense_gradients(tokens, protos, [torch.ones(1, 3, dtype=torch.float64)],
                                        lambda s: (s.amax(1),))
    torch.testing.assert_close(protos.grad, proto_grad)


def test_prototype_head_trains_as_with_dense_autograd():
    """One training step of the binarised head: the prototypes' gradient equals the dense formula's."""
    torch.manual_seed(2)
    head = PrototypeHead(16, 3, n_prototypes_per_class=4)
    patches = torch.randn(5, 9, 16)
    head(None, patches).square().sum().backward()
    sparse = head.prototypes.grad.clone()
    head.zero_grad()
    dense = F.normalize(patches, dim=-1) @ F.normalize(head.effective_prototypes(), dim=-1).T
    head.linear(dense.amax(1)).square().sum().backward()
    torch.testing.assert_close(sparse, head.prototypes.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sparse_backward_on_cuda_in_float32_and_under_bfloat16_autocast():
    """On a GPU: float32 gradients equal autograd's; under bfloat16 autocast the prototypes' gradient is the
    float32 sum of the tokens that attain each maximum."""
    torch.manual_seed(3)
    tokens = F.normalize(torch.randn(8, 50, 64, device="cuda"), dim=-1)
    protos = torch.randn(40, 64, device="cuda", requires_grad=True)
    max_similarities(tokens, protos).sum().backward()
    sparse = protos.grad.clone()
    protos.grad = None
    (tokens @ protos.T).amax(1).sum().backward()
    torch.testing.assert_close(sparse, protos.grad, rtol=1e-4, atol=1e-5)
    protos.grad = None
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = max_similarities(tokens, protos)
        at = (tokens @ protos.T).max(dim=1).indices  # the same kernel picks the same tokens
    out.float().sum().backward()
    assert protos.grad.dtype == torch.float32
    expected = tokens.gather(1, at[:, :, None].expand(-1, -1, 64)).sum(0)
    torch.testing.assert_close(protos.grad, expected, rtol=1e-4, atol=1e-4)
