"""Linear layers on few rows, weight first: the decoding steps of batched generation on a CPU.

A decoding step multiplies a handful of rows (one per answer still being generated) by every weight matrix.
``F.linear(x, W)`` asks the BLAS for ``x @ W.T``, and on few rows MKL's single-precision GEMM spends much of
the call packing ``W``, the large operand; as ``(W @ x.T).T`` it packs the small one. Timed on this
project's 2-core CPU, SmolLM2's matmuls (one layer's seven, and the 49,152-word output head, 113 MB of
weights) take, weight first, ~0.75× and ~0.70× the time at 32 rows, ~0.9× and ~0.8× at 128 (a prompt
prefilled alone), nothing different at 1 row and no gain from ~300 rows up (prefill of a batch, training),
so 2 to :data:`MAX_ROWS` rows take this path. What it buys in generation:
``benchmarks/bench_generation.py --sides ftbench,wide``.

The result is the same products summed by another kernel: equal up to float rounding (tested), and the
greedy answers of the default study are unchanged. Only plain ``torch.nn.Linear`` modules in float32 on the
CPU take it (peft's LoRA layers run their inner ``base_layer``, which is one; bitsandbytes' quantised layers
are not), and only inside :func:`weight_first`, which :func:`ftbench.generation.generate` holds: training and
anything else that runs the model are untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

#: Most rows a linear layer multiplies weight first: past 256 the measured gain fades (SmolLM2's shapes).
MAX_ROWS = 256


def _weight_first(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed as ``(weight @ x.T).T``, contiguous."""
    out = torch.mm(weight, x.reshape(-1, x.shape[-1]).t()).t()
    if bias is not None:
        out = out + bias
    return out.contiguous().view(*x.shape[:-1], weight.shape[0])


def _forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // max(x.shape[-1], 1)
    if (1 < rows <= MAX_ROWS and x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32):
        return _weight_first(x, self.weight, self.bias)
    return F.linear(x, self.weight, self.bias)


@contextmanager
def weight_first(model: Any) -> Iterator[None]:
    """Within the block, every plain ``torch.nn.Linear`` of ``model`` multiplies 2 to :data:`MAX_ROWS` rows
    weight first (the module's own ``forward`` for any other input). Each module gets back its class's
    ``forward`` on the way out, error or not."""
    modules = model.modules() if isinstance(model, torch.nn.Module) else []
    linears = [m for m in modules if type(m) is torch.nn.Linear and "forward" not in vars(m)]
    try:
        for m in linears:
            m.forward = _forward.__get__(m)
        yield
    finally:
        for m in linears:
            vars(m).pop("forward", None)
