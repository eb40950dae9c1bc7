"""Linear layers on few rows, weight first (src/ftbench/skinny.py): the same values as ``F.linear``, only where
it pays, only inside the block, and on every decoding step of batched generation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_generation import GEN, _fleet_prompts, _varied_model

from ftbench import skinny
from ftbench.generation import generate


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(2, 48), (5, 48), (4, 1, 48), (8, 8, 48), (1, 48), (3, 30, 48), (257, 48)])
def test_weight_first_computes_what_linear_computes(shape, bias, monkeypatch):
    """2 to 256 rows (3-D inputs flattened) give ``F.linear``'s values up to float rounding; one row and more
    than 256 go to ``F.linear`` itself (equal bit for bit); so does float64."""
    torch.manual_seed(0)
    layer, wide = torch.nn.Linear(48, 96, bias=bias), torch.nn.Linear(48, 96, bias=bias).double()
    x = torch.randn(shape)
    expected = F.linear(x, layer.weight, layer.bias)
    calls = []
    first = skinny._weight_first
    monkeypatch.setattr(skinny, "_weight_first", lambda *a: calls.append(1) or first(*a))
    with skinny.weight_first(layer), skinny.weight_first(wide), torch.inference_mode():
        out, out64 = layer(x), wide(x.double())
    rows = x.numel() // 48
    assert len(calls) == (1 if 1 < rows <= skinny.MAX_ROWS else 0)  # float64 never takes the path
    assert out.shape == expected.shape and out.is_contiguous()
    if calls:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(out, expected)
    assert torch.equal(out64, F.linear(x.double(), wide.weight, wide.bias))


def test_only_plain_linears_inside_the_block_and_restored_after_an_error():
    class Quantised(torch.nn.Linear):  # a subclass (bitsandbytes' layers are) keeps its own forward
        pass

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), Quantised(8, 8), torch.nn.ReLU())
    with pytest.raises(RuntimeError, match="boom"), skinny.weight_first(model):
        assert "forward" in vars(model[0]) and "forward" not in vars(model[1])
        raise RuntimeError("boom")
    assert all("forward" not in vars(m) for m in model.modules())


def test_a_linear_whose_forward_was_already_replaced_keeps_it():
    """A hook that replaced a layer's ``forward`` on the instance (accelerate's offloading does) is neither
    overridden inside the block nor removed after it."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))

    def hooked(x):
        return x * 2

    model[1].forward = hooked
    x = torch.ones(4, 8)
    with skinny.weight_first(model):
        assert torch.equal(model[1](x), x * 2) and vars(model[0])["forward"] is not None
    assert vars(model[1])["forward"] is hooked and "forward" not in vars(model[0])


@pytest.mark.parametrize("arch", ["llama", "llama-lora"])
def test_generation_decodes_weight_first_with_the_same_answers(arch, tiny_llama, tiny_mistral, monkeypatch):
    """Batched generation runs its decoding steps' linear layers weight first (LoRA's inner layers too), gives
    the answers it gives without, and leaves the model as it found it."""
    model, tok = _varied_model(arch, tiny_llama, tiny_mistral)
    prompts = _fleet_prompts(tok)
    plain, _ = generate(model, tok, prompts, weight_first=False, **GEN)
    calls = []
    first = skinny._weight_first
    monkeypatch.setattr(skinny, "_weight_first", lambda *a: calls.append(a[1].shape) or first(*a))
    answers, _ = generate(model, tok, prompts, **GEN)
    assert answers == plain and len(set(answers)) > len(answers) // 2
    assert (64, 64) in calls  # a base layer (q_proj or o_proj)
    assert arch == "llama" or (64, 4) in calls  # and a LoRA B matrix (rank 4 onto q_proj's 64 outputs)
    assert all("forward" not in vars(m) for m in model.modules())
