"""grader/inside/inference.py: logits as the model gives them, in either layout, on the CPU."""

from __future__ import annotations

import torch

from grader.inside.augment import Normalizer
from grader.inside.inference import infer
from grader.protocol import Recipe
from tests.inside.conftest import CPU, Data, ViewNet, fit, synthetic, tiny_net


def test_infer_returns_cpu_float_logits_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    model, x, r = tiny_net().train(), synthetic(10), Recipe()
    logits = infer(model, x.permute(0, 2, 3, 1).numpy().copy(), Normalizer.of(r, CPU), CPU, batch_size=4)
    assert logits.shape == (10, 10) and logits.dtype == torch.float32 and model.training
    with torch.no_grad():
        expected = model.eval()(Normalizer.of(r, CPU)(x))
    torch.testing.assert_close(logits, expected)


def test_infer_runs_a_trained_model_in_the_layout_it_trained_in(cifar: Data) -> None:
    model, result = fit(cifar, ViewNet, channels_last=True, epochs=1)
    assert result.nchw_after == "features"
    images = cifar[0][:64]
    norm = Normalizer.of(Recipe(), CPU)
    fast = infer(model, images, norm, CPU, channels_last=result.channels_last)
    torch.testing.assert_close(fast, infer(model, images, norm, CPU), rtol=1e-4, atol=1e-4)
    assert not any(m._forward_hooks for m in model.modules())
    assert all(p.is_contiguous() for p in model.parameters())
