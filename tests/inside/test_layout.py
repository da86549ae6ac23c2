"""grader/inside/layout.py: the channels_last probe finds a layout each model trains in, without a trace."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from grader.inside.layout import probe_layout
from tests.inside.conftest import CPU, Data, ViewMLP, ViewNet, fit, same_weights, tiny_net


@pytest.mark.parametrize(
    ("make", "channels_last", "nchw_after"),
    [(tiny_net, True, None), (ViewNet, True, "features"), (ViewMLP, False, None)],
)
def test_probe_picks_a_layout_the_model_can_train_in(
    cifar: Data,
    make: Callable[[], nn.Module],
    channels_last: bool,
    nchw_after: str | None,
) -> None:
    model, result = fit(cifar, make, channels_last=True, epochs=1)
    assert (result.channels_last, result.nchw_after) == (channels_last, nchw_after)
    assert math.isfinite(result.history[0].train_loss)
    # Handed back as the student wrote it: NCHW weights, no hooks, .view works again.
    assert all(p.is_contiguous() for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_probe_leaves_no_trace(cifar: Data) -> None:
    torch.manual_seed(0)
    model = ViewNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layout = probe_layout(model, torch.randn(2, 3, 32, 32), CPU)
    assert layout.nchw_after == "features"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    layout.undo(model)
    probed, _ = fit(cifar, ViewMLP, channels_last=True, epochs=1)
    plain, _ = fit(cifar, ViewMLP, channels_last=False, epochs=1)
    assert same_weights(probed, plain)
