"""grader/inside/counting.py on the three architectures students submit for EAI Lab 2.

The expected totals are the figures students print with torchsummary and thop; the
hand formulas below compute the same counts a second way, layer by layer.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.inside.counting import ForwardProbe, count_macs, count_params, module_counts
from grader.protocol import DiagramNode

MB = 1024**2
INPUT = (3, 32, 32)
COUNTERS = ("thop", "ptflops")


def x_batch(device: str = "cpu") -> torch.Tensor:
    return torch.zeros(1, *INPUT, device=device)  # (B, C, H, W)


# --- reference architectures ------------------------------------------------------


def cnn_seed000() -> nn.Sequential:
    """Three Conv-BN-ReLU-MaxPool blocks (32/64/128 channels), then Linear(2048, 10)."""
    layers: list[nn.Module] = []
    cin = 3
    for cout in (32, 64, 128):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
        cin = cout
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 4 * 4, 10))


def cnn_seed001() -> nn.Sequential:
    """Three [Conv-BN-ReLU, Conv-BN-ReLU, MaxPool] blocks, then a BN1d/Dropout MLP head."""
    layers: list[nn.Module] = []
    cin = 3
    for cout in (32, 64, 128):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        layers += [nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
        cin = cout
    head = [nn.Linear(2048, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10)]
    return nn.Sequential(*layers, nn.Flatten(), *head)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the first block)


class ResNet18(nn.Module):
    """ResNet18 for 32×32 inputs: 3×3 stem, no max-pool, [2, 2, 2, 2] BasicBlocks."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        cin = 64
        stages = []
        for cout, stride in STAGES:
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 64, 32, 32)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, 4, 4)
        x = F.adaptive_avg_pool2d(x, 1)  # (B, 512, 1, 1)
        return self.fc(torch.flatten(x, 1))


BUILDERS = {"cnn000": cnn_seed000, "cnn001": cnn_seed001, "resnet18": ResNet18}


# --- hand formulas ------------------------------------------------------------------


def conv_params(cin: int, cout: int, k: int, groups: int = 1, bias: bool = True) -> int:
    return cout * (cin // groups) * k * k + (cout if bias else 0)


def linear_params(fin: int, fout: int) -> int:
    return fin * fout + fout


def conv_macs(cin: int, cout: int, k: int, hw_out: int, groups: int = 1) -> int:
    out_elems = cout * hw_out * hw_out
    return out_elems * (cin // groups) * k * k


def linear_macs(fin: int, fout: int) -> int:
    return fin * fout


def bn_macs_thop(elems: int) -> int:
    # thop: normalize (2 per element) and the affine scale/shift (×2).
    return 4 * elems


def cnn000_by_hand() -> tuple[int, int]:
    params, macs, cin, hw = 0, 0, 3, 32
    for cout in (32, 64, 128):
        params += conv_params(cin, cout, 3) + 2 * cout
        macs += conv_macs(cin, cout, 3, hw) + bn_macs_thop(cout * hw * hw)
        cin, hw = cout, hw // 2
    return params + linear_params(2048, 10), macs + linear_macs(2048, 10)


def cnn001_by_hand() -> tuple[int, int]:
    params, macs, cin, hw = 0, 0, 3, 32
    for cout in (32, 64, 128):
        for c_in in (cin, cout):
            params += conv_params(c_in, cout, 3) + 2 * cout
            macs += conv_macs(c_in, cout, 3, hw) + bn_macs_thop(cout * hw * hw)
        cin, hw = cout, hw // 2
    params += linear_params(2048, 128) + 2 * 128 + linear_params(128, 10)
    macs += linear_macs(2048, 128) + bn_macs_thop(128) + linear_macs(128, 10)
    return params, macs


def resnet18_by_hand() -> tuple[int, int]:
    params = conv_params(3, 64, 3, bias=False) + 2 * 64
    macs = conv_macs(3, 64, 3, 32) + bn_macs_thop(64 * 32 * 32)
    cin, hw = 64, 32
    for cout, stride in STAGES:
        hw //= stride
        convs = [(cin, cout, 3), (cout, cout, 3), (cout, cout, 3), (cout, cout, 3)]
        if stride != 1 or cin != cout:
            convs.append((cin, cout, 1))
        for c_in, c_out, k in convs:
            params += conv_params(c_in, c_out, k, bias=False) + 2 * c_out
            macs += conv_macs(c_in, c_out, k, hw) + bn_macs_thop(c_out * hw * hw)
        cin = cout
    return params + linear_params(512, 10), macs + linear_macs(512, 10)


# --- measurements, once per module --------------------------------------------------


@dataclass
class Measured:
    model: nn.Module
    params: tuple[int, int]
    macs: dict[str, int]
    probe: ForwardProbe
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def measured() -> dict[str, Measured]:
    torch.manual_seed(0)
    out = {}
    for name, build in BUILDERS.items():
        model = build().eval()
        macs = {counter: count_macs(model, x_batch(), counter) for counter in COUNTERS}
        probe = ForwardProbe(model).run(x_batch())
        out[name] = Measured(model, count_params(model), macs, probe, probe.summary(INPUT))
    return out


# The figures students report for these architectures.
REPORTED = {
    "cnn000": (114_186, 10_571_776),
    "cnn001": (551_722, 39_356_160),
    "resnet18": (11_173_962, 557_880_320),
}
BY_HAND = {"cnn000": cnn000_by_hand, "cnn001": cnn001_by_hand, "resnet18": resnet18_by_hand}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_params_and_thop_macs_match_the_reported_figures(measured: dict[str, Measured], name: str) -> None:
    params, macs = REPORTED[name]
    assert measured[name].params == (params, params)
    assert measured[name].macs["thop"] == macs


@pytest.mark.parametrize("name", list(BUILDERS))
def test_params_and_thop_macs_match_the_hand_count(measured: dict[str, Measured], name: str) -> None:
    params, macs = BY_HAND[name]()
    assert measured[name].params[0] == params
    assert measured[name].macs["thop"] == macs


def test_ptflops_figures(measured: dict[str, Measured]) -> None:
    observed = {name: m.macs["ptflops"] for name, m in measured.items()}
    assert observed == {"cnn000": 10_743_818, "cnn001": 39_585_674, "resnet18": 557_528_074}


def test_ptflops_convention_by_hand_for_cnn000(measured: dict[str, Measured]) -> None:
    # ptflops: conv and linear include the bias add; BN 2 per element; nn.ReLU and nn.MaxPool2d
    # are counted by their module hook and again through the patched F.relu / F.max_pool2d.
    macs, cin, hw = 0, 3, 32
    for cout in (32, 64, 128):
        fmap = cout * hw * hw
        macs += conv_macs(cin, cout, 3, hw) + fmap  # conv + bias
        macs += 2 * fmap + 2 * fmap + 2 * fmap  # BN, ReLU twice, max-pool input twice
        cin, hw = cout, hw // 2
    macs += linear_macs(2048, 10) + 10
    assert measured["cnn000"].macs["ptflops"] == macs


def test_trainable_params_exclude_frozen_layers() -> None:
    model = cnn_seed000()
    for p in model[0].parameters():
        p.requires_grad_(False)
    assert count_params(model) == (114_186, 114_186 - conv_params(3, 32, 3))


@pytest.mark.parametrize(
    ("layer", "shape", "params", "thop", "ptflops"),
    [
        # out_elems * (cin/groups * kh * kw); ptflops also adds one per output element for the bias
        (
            nn.Conv2d(3, 16, 3, padding=1),
            (1, 3, 32, 32),
            conv_params(3, 16, 3),
            conv_macs(3, 16, 3, 32),
            None,
        ),
        (
            nn.Conv2d(16, 32, 3, padding=1, groups=4, bias=False),
            (1, 16, 8, 8),
            conv_params(16, 32, 3, groups=4, bias=False),
            conv_macs(16, 32, 3, 8, groups=4),
            conv_macs(16, 32, 3, 8, groups=4),
        ),
        (nn.Conv2d(8, 4, 5, stride=2), (1, 8, 15, 15), conv_params(8, 4, 5), conv_macs(8, 4, 5, 6), None),
        (nn.Linear(2048, 10), (1, 2048), linear_params(2048, 10), linear_macs(2048, 10), None),
        (nn.Linear(300, 7, bias=False), (1, 300), 300 * 7, linear_macs(300, 7), linear_macs(300, 7)),
    ],
)
def test_single_layer_counts_equal_the_hand_formula(
    layer: nn.Module, shape: tuple[int, ...], params: int, thop: int, ptflops: int | None
) -> None:
    x = torch.zeros(shape)
    out_elems = layer(x).numel()
    assert count_params(layer)[0] == params
    assert count_macs(layer, x, "thop") == thop
    with_bias = thop + (out_elems if getattr(layer, "bias", None) is not None else 0)
    assert count_macs(layer, x, "ptflops") == (ptflops if ptflops is not None else with_bias)


def test_thop_macs_scale_with_the_batch() -> None:
    layer = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(layer, torch.zeros(4, 3, 16, 16), "thop") == 4 * conv_macs(3, 8, 3, 16)


def test_unknown_counter_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown MAC counter 'fvcore'.*thop.*ptflops"):
        count_macs(nn.Linear(2, 2), torch.zeros(1, 2), "fvcore")


@pytest.mark.parametrize("counter", COUNTERS)
def test_count_macs_leaves_the_model_as_built(counter: str) -> None:
    torch.manual_seed(0)
    model = cnn_seed001().train()
    before = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    count_macs(model, x_batch(), counter)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert [m.training for m in model.modules()] == modes
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# --- meta device -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn000", "resnet18"])
def test_meta_model_counts_like_the_real_one(measured: dict[str, Measured], name: str) -> None:
    with torch.device("meta"):
        model = BUILDERS[name]()
    assert all(p.is_meta for p in model.parameters())
    assert count_params(model) == measured[name].params
    assert count_macs(model, x_batch("meta"), "thop") == measured[name].macs["thop"]


def test_ptflops_refuses_the_meta_device() -> None:
    # On meta, addmm decomposes into a torch.mm that ptflops has patched: Linear would count twice.
    with torch.device("meta"):
        model = cnn_seed000()
    with pytest.raises(ValueError, match="meta"):
        count_macs(model, x_batch("meta"), "ptflops")


def test_huge_linear_on_meta_is_counted_without_allocating() -> None:
    with torch.device("meta"):
        layer = nn.Linear(100_000, 100_000)
    assert layer.weight.is_meta and layer.bias is not None and layer.bias.is_meta
    assert count_params(layer) == (10_000_100_000, 10_000_100_000)
    assert count_macs(layer, torch.zeros(1, 100_000, device="meta"), "thop") == 100_000 * 100_000


# --- module counts and the forward probe --------------------------------------------


def test_module_counts(measured: dict[str, Measured]) -> None:
    assert module_counts(measured["cnn000"].model) == {
        "BatchNorm2d": 3,
        "Conv2d": 3,
        "Flatten": 1,
        "Linear": 1,
        "MaxPool2d": 3,
        "ReLU": 3,
    }
    resnet = module_counts(measured["resnet18"].model)
    # 17 convs of the main path + 3 projection shortcuts; 8 blocks; 1 stem + 8 block ReLU modules
    assert (resnet["Conv2d"], resnet["BatchNorm2d"], resnet["BasicBlock"], resnet["ReLU"]) == (20, 20, 8, 9)
    assert resnet["Linear"] == 1
    assert "ResNet18" not in resnet


@pytest.mark.parametrize(("name", "adds"), [("cnn000", 0), ("cnn001", 0), ("resnet18", 8)])
def test_residual_adds(measured: dict[str, Measured], name: str, adds: int) -> None:
    assert measured[name].probe.residual_adds == adds


class _Adds(nn.Module):
    """One in-place skip, one torch.add skip, and additions that are not skips."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        y += x  # skip 1
        y = torch.add(y, x)  # skip 2
        y = y + 1.0  # scalar: not a skip
        flat = y.flatten(1)
        flat = flat + flat  # 2-D: not a feature map
        return flat + torch.ones(flat.shape[-1])  # broadcast bias: not a skip


def test_residual_adds_count_only_equal_shaped_feature_maps() -> None:
    assert ForwardProbe(_Adds()).run(torch.zeros(1, 2, 4, 4)).residual_adds == 2


def _cnn000_rows() -> list[tuple[str, list[int], int]]:
    rows, cin, hw = [], 3, 32
    for cout in (32, 64, 128):
        shape = [-1, cout, hw, hw]
        rows += [("Conv2d", shape, conv_params(cin, cout, 3)), ("BatchNorm2d", shape, 2 * cout)]
        rows += [("ReLU", shape, 0), ("MaxPool2d", [-1, cout, hw // 2, hw // 2], 0)]
        cin, hw = cout, hw // 2
    rows += [("Flatten", [-1, 2048], 0), ("Linear", [-1, 10], linear_params(2048, 10))]
    return [(f"{kind}-{i}", shape, params) for i, (kind, shape, params) in enumerate(rows, start=1)]


def test_summary_rows_of_cnn000(measured: dict[str, Measured]) -> None:
    rows = measured["cnn000"].summary.rows
    assert [(r.name, r.output_shape, r.params) for r in rows] == _cnn000_rows()
    assert [r.params for r in rows[:5]] == [896, 64, 0, 0, 18496]
    assert rows[0].name == "Conv2d-1" and rows[0].output_shape == [-1, 32, 32, 32]


def test_summary_totals_of_cnn000(measured: dict[str, Measured]) -> None:
    s = measured["cnn000"].summary
    activations = sum(math.prod(shape[1:]) for _, shape, _ in _cnn000_rows())
    assert s.total_params == s.trainable_params == 114_186
    assert s.forward_backward_mb == pytest.approx(2 * activations * 4 / MB)
    assert s.params_mb == pytest.approx(114_186 * 4 / MB)
    printed = {
        k: round(getattr(s, k), 2) for k in ("input_mb", "forward_backward_mb", "params_mb", "total_mb")
    }
    assert printed == {"input_mb": 0.01, "forward_backward_mb": 1.44, "params_mb": 0.44, "total_mb": 1.88}


def resnet18_activations() -> int:
    """Output elements of every torchsummary row: leaf modules and the BasicBlocks themselves."""
    total = 3 * 64 * 32 * 32  # stem conv, BN, ReLU
    cin, hw = 64, 32
    for cout, stride in STAGES:
        hw //= stride
        fmap = cout * hw * hw
        projection = stride != 1 or cin != cout
        total += fmap * (4 + 1 + 1 + (2 if projection else 0))  # conv/bn ×2, ReLU, block row, shortcut
        total += fmap * (4 + 1 + 1)
        cin = cout
    return total + 10  # fc


def test_summary_totals_of_resnet18(measured: dict[str, Measured]) -> None:
    s = measured["resnet18"].summary
    assert s.total_params == 11_173_962
    assert s.forward_backward_mb == pytest.approx(2 * resnet18_activations() * 4 / MB)
    printed = {
        k: round(getattr(s, k), 2) for k in ("input_mb", "forward_backward_mb", "params_mb", "total_mb")
    }
    assert printed == {"input_mb": 0.01, "forward_backward_mb": 13.63, "params_mb": 42.63, "total_mb": 56.26}


def test_summary_shows_a_block_row_with_its_own_params_only(measured: dict[str, Measured]) -> None:
    rows = measured["resnet18"].summary.rows
    blocks = [r for r in rows if r.name.startswith("BasicBlock-")]
    assert len(blocks) == 8
    assert all(r.params == 0 for r in blocks)
    assert blocks[-1].output_shape == [-1, 512, 4, 4]
    assert sum(r.params for r in rows) == 11_173_962


def test_blocks_of_resnet18(measured: dict[str, Measured]) -> None:
    blocks = measured["resnet18"].probe.blocks
    names = [b.name for b in blocks]
    layers = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert names == ["stem.0", "stem.1", "stem.2", *layers, "fc"]
    assert sum(b.params for b in blocks) == 11_173_962
    by_name = {b.name: b for b in blocks}
    assert by_name["layer2.0"].output_shape == [-1, 128, 16, 16]
    assert by_name["layer2.0"].params == (
        conv_params(64, 128, 3, bias=False)
        + conv_params(128, 128, 3, bias=False)
        + conv_params(64, 128, 1, bias=False)
        + 3 * 2 * 128
    )
    assert by_name["fc"] == DiagramNode("fc", "Linear", [-1, 10], 5130)


def test_probe_removes_its_hooks_and_keeps_the_output(measured: dict[str, Measured]) -> None:
    m = measured["cnn001"]
    assert not any(mod._forward_hooks for mod in m.model.modules())
    assert m.probe.output is not None and list(m.probe.output.shape) == [1, 10]


def test_weights_sketch_tells_copies_from_independent_training() -> None:
    from grader.inside.counting import SKETCH_SIZE, weights_sketch
    from grader.report.similarity import fingerprint_distance

    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Flatten(), nn.Linear(16 * 30 * 30, 10))
    copy_ = copy.deepcopy(a)
    with torch.no_grad():
        for p in copy_.parameters():
            p.add_(torch.randn_like(p) * 1e-4)  # a "retouched" copy
    torch.manual_seed(1)
    other = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Flatten(), nn.Linear(16 * 30 * 30, 10))
    sketch = weights_sketch(a)
    assert len(sketch) == SKETCH_SIZE and sketch == weights_sketch(copy.deepcopy(a))
    assert fingerprint_distance(sketch, weights_sketch(copy_)) < 0.01
    assert fingerprint_distance(sketch, weights_sketch(other)) > 0.5
