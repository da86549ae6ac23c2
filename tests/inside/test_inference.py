"""grader/inside/inference.py: float32's predictions at reduced precision's speed, in either layout.

The fast pass runs in bf16 where this CPU has it (AVX512-BF16 or AMX), and the images whose
deciding margins are within its error are computed again in float32. Every test compares with a
plain float32 pass of the same model: the top-1 prediction and, unless the test asks for top-1
only, the top-3 set must be equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from grader.data import load_split
from grader.inside import inference
from grader.inside.augment import Normalizer, to_device
from grader.inside.channel import StageFailure
from grader.inside.inference import infer, logits
from grader.inside.layout import Layout, fast_dtype
from grader.protocol import Recipe
from tests.conftest import load_module
from tests.inside.conftest import CPU, Data, ViewNet, fit, synthetic, tiny_net

REPO = Path(__file__).resolve().parents[2]


def float32(model: nn.Module, images: np.ndarray | torch.Tensor, norm: Normalizer) -> torch.Tensor:
    """A student's own evaluation loop: float32, NCHW, in batches of 500."""
    data = to_device(images, CPU)
    with torch.no_grad():
        return torch.cat(
            [model.eval()(norm(data[i : i + 500]).contiguous()) for i in range(0, len(data), 500)]
        )


def same_predictions(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """How many images differ in their top-1 prediction, and in their top-3 set."""
    top3 = [torch.sort(x.topk(3, 1).indices, 1).values for x in (a, b)]
    return int((a.argmax(1) != b.argmax(1)).sum()), int((top3[0] != top3[1]).any(1).sum())


def test_infer_returns_cpu_float_logits_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    model, x, r = tiny_net().train(), synthetic(300), Recipe()
    norm = Normalizer.of(r, CPU)
    out = infer(model, x.permute(0, 2, 3, 1).numpy().copy(), norm, CPU, batch_size=64)
    assert out.shape == (300, 10) and out.dtype == torch.float32 and out.device == CPU and model.training
    assert same_predictions(out, float32(model, x, norm)) == (0, 0)
    model.eval()


class Squeezing(nn.Module):
    """A head ending in ``x.squeeze()``: one image gives ``[classes]``, not ``[1, classes]``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze()


def test_a_forward_that_squeezes_a_last_batch_of_one_image_gives_its_row() -> None:
    torch.manual_seed(0)
    model, x, r = Squeezing(tiny_net()).eval(), synthetic(65), Recipe()
    norm = Normalizer.of(r, CPU)
    out = infer(model, x.permute(0, 2, 3, 1).numpy().copy(), norm, CPU, batch_size=64)
    assert out.shape == (65, 10)
    assert same_predictions(out, float32(model.net, x, norm)) == (0, 0)


def test_this_machine_runs_the_fast_pass_in_bf16() -> None:
    """The project's machines have AVX512-BF16; elsewhere the float32 pass alone is exact."""
    assert fast_dtype(CPU) == torch.bfloat16


class NearTies(nn.Module):
    """Logits whose top two differ by less than bf16 can tell apart, for half of the images."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x.mean((2, 3))  # (B, C)
        logits = torch.cat([base, base[:, :1] + self.scale * x[:, :1, 0, 0], base.flip(1)], 1)
        return torch.cat([logits, logits[:, :3] * 0.5], 1)  # (B, 9) plus one: 10 classes


def test_images_the_fast_pass_could_rank_differently_are_computed_again_in_float32() -> None:
    torch.manual_seed(0)
    model, x = NearTies(), synthetic(1000, seed=3)
    norm = Normalizer.from_stats((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), CPU)
    exact, out = float32(model, x, norm), infer(model, x, norm, CPU, 256)
    assert same_predictions(out, exact) == (0, 0)
    redone = torch.isclose(out, exact, rtol=0, atol=0).all(1)
    assert redone.float().mean() > 0.3  # many images were near ties: those are float32's own


class Brightness(nn.Module):
    """Two leading logits that bf16 ranks the wrong way round, by a margin that grows with the
    image's brightness: a black image gives all-zero logits, which bf16 computes exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 10, bias=False)
        weight = torch.zeros(10, 3)
        weight[0, 0] = 1.0
        weight[1, 0], weight[1, 1] = 1.0035, -0.002  # bf16 rounds 1.0035 to 1.0: class 0 wins
        weight[2:, 0] = 0.5 - 0.01 * torch.arange(8)
        self.head.weight.data = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean((2, 3)))


def test_the_error_is_measured_across_the_images_not_on_the_first_ones() -> None:
    """Sorted data (a test split decoded from class folders is sorted by class): the first half
    black, where bf16 is exact, the second half where it ranks the leading logits the other way."""
    x = synthetic(1000, seed=3)
    x[:, 1:] = x[:, :1]
    x[:500] = 0
    model, norm = Brightness(), Normalizer.from_stats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), CPU)
    exact = float32(model, x, norm)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert same_predictions(model(norm(x)).float(), exact)[0] == 500  # bf16 alone: all differ
    assert same_predictions(infer(model, x, norm, CPU, 256), exact) == (0, 0)


class ErrorByPixel(nn.Module):
    """Class 0 leads class 1 by the first pixel's red value; in reduced precision (under
    autocast) class 1 gains its green value: an error as large as a test wants, on the images a
    test picks. The other classes trail far behind."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margin, error = x[:, 0, 0, 0], x[:, 1, 0, 0]  # (B,), (B,)
        second = -margin + (error if torch.is_autocast_enabled("cpu") else 0.0)
        rest = -10.0 - 2.0 * torch.arange(8.0).expand(len(x), 8)
        return torch.cat([torch.zeros_like(margin)[:, None], second[:, None], rest], 1)


def test_an_error_larger_than_the_calibrations_widens_the_bound_once_it_is_seen() -> None:
    """The calibration images show a small error. Some other images are near ties in the fast
    pass because their large error nearly cancels their margin: computed again, they show that
    error, and the images it reverses, whose fast margins looked safe, are computed again too."""
    n = 1000
    x = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    x[:, 0, 0, 0], x[:, 1, 0, 0] = 255, 3  # margin 1.0, error 0.012: the fast pass ranks right
    calibrated = set((torch.arange(inference.CALIBRATION) * n // inference.CALIBRATION).tolist())
    others = [row for row in range(n) if row not in calibrated]
    near, reversed_ = others[:10], others[10:20]
    x[near, 0, 0, 0], x[near, 1, 0, 0] = 128, 125  # margin 0.502, error 0.490: fast margin 0.012
    x[reversed_, 0, 0, 0], x[reversed_, 1, 0, 0] = 77, 153  # margin 0.302, error 0.600: reversed
    model, norm = ErrorByPixel(), Normalizer.from_stats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), CPU)
    exact = float32(model, x, norm)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert same_predictions(model(norm(x)).float(), exact)[0] == 10  # the reversed ones
    out = infer(model, x, norm, CPU, 256)
    assert same_predictions(out, exact) == (0, 0)
    assert torch.equal(out[near + reversed_], exact[near + reversed_])


class ThirdPlaceByPixel(nn.Module):
    """Classes 0 and 1 lead far ahead; class 2 leads class 3 by the first pixel's red value, and
    under autocast class 3 gains its green value (as in ``ErrorByPixel``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margin, error = x[:, 0, 0, 0], x[:, 1, 0, 0]  # (B,), (B,)
        third = torch.zeros_like(margin)
        fourth = -margin + (error if torch.is_autocast_enabled("cpu") else 0.0)
        rest = -10.0 - 2.0 * torch.arange(6.0).expand(len(x), 6)
        lead = torch.tensor([10.0, 5.0]).expand(len(x), 2)
        return torch.cat([lead, third[:, None], fourth[:, None], rest], 1)


def test_only_the_rankings_asked_for_are_kept_float32s() -> None:
    """Images whose third and fourth classes the fast pass swaps: with ``ranks=(1,)`` the top-1
    predictions (never in doubt here) are float32's and nothing past the calibration is computed
    again, so their top-3 sets stay the fast pass's; by default top-3 is kept float32's too."""
    n = 1000
    x = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    x[:, 0, 0, 0], x[:, 1, 0, 0] = 255, 3  # margin 1.0, error 0.012: the fast pass ranks right
    calibrated = torch.arange(inference.CALIBRATION) * n // inference.CALIBRATION
    swapped = [row for row in range(n) if row not in set(calibrated.tolist())][:10]
    x[swapped, 0, 0, 0], x[swapped, 1, 0, 0] = 1, 2  # margin 0.004, error 0.008: swapped
    model, norm = ThirdPlaceByPixel(), Normalizer.from_stats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), CPU)
    exact = float32(model, x, norm)
    top1_only = infer(model, x, norm, CPU, 256, ranks=(1,))
    assert same_predictions(top1_only, exact) == (0, 10)
    assert torch.equal(torch.nonzero((top1_only == exact).all(1)).flatten(), calibrated)
    assert same_predictions(infer(model, x, norm, CPU, 256), exact) == (0, 0)


class ConvBN(nn.Module):
    """Two convolution–batch-norm pairs, the first convolution's output also kept for a
    shortcut, so that only the second pair can be folded; running statistics far from 0 and 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-1.0, 1.0)
            bn.running_var.uniform_(0.2, 4.0)
            nn.init.uniform_(bn.weight, 0.5, 2.0)
            nn.init.uniform_(bn.bias, -0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        y = torch.relu(self.bn1(a))
        y = torch.relu(self.bn2(self.conv2(y)) + a)
        return self.head(y.mean((2, 3)))


def test_the_fast_pass_runs_on_a_copy_with_batch_norms_folded_and_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model, x = ConvBN().eval(), synthetic(400, seed=5)
    norm = Normalizer.of(Recipe(), CPU)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = inference.folded(model)
    assert copy is not None and inference.folded(tiny_net().eval()) is not None
    assert [type(m) for m in copy.modules() if isinstance(m, nn.BatchNorm2d)] == [nn.BatchNorm2d]  # bn1 stays
    with torch.no_grad():
        assert torch.allclose(copy(norm(x)), model(norm(x)), atol=1e-5)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert same_predictions(infer(model, x, norm, CPU), float32(model, x, norm)) == (0, 0)


class Branchy(ConvBN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if x.mean() > 0 else -x)  # data-dependent: does not trace


class SharedConv(ConvBN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.head((self.conv2(y) + y).mean((2, 3)))  # conv2 again, without its batch norm


def test_no_folded_copy_where_one_could_compute_something_else() -> None:
    torch.manual_seed(0)
    assert inference.folded(ConvBN().train()) is None  # batch statistics, nothing to fold
    assert inference.folded(Branchy().eval()) is None
    assert inference.folded(SharedConv().eval()) is None
    no_norms = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 10)).eval()
    assert inference.folded(no_norms) is None
    x, norm = synthetic(300, seed=6), Normalizer.of(Recipe(), CPU)
    for model in (Branchy().eval(), SharedConv().eval()):
        assert same_predictions(infer(model, x, norm, CPU), float32(model, x, norm)) == (0, 0)


def test_a_folded_copy_that_views_its_features_runs_channels_last_and_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """ViewNet's ``.view`` raises on channels_last activations in the probe: a traced module's
    own call would print that traceback to stderr, into the job's log."""
    torch.manual_seed(0)
    model, x, norm = ViewNet().eval(), synthetic(300, seed=8), Normalizer.of(Recipe(), CPU)
    copy = inference.folded(model)
    assert copy is not None and not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    assert same_predictions(infer(model, x, norm, CPU), float32(model, x, norm)) == (0, 0)
    assert capfd.readouterr().err == ""


class Broken(nn.Module):
    def __init__(self, error: type[Exception]) -> None:
        super().__init__()
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.error("the copy broke")


@pytest.mark.parametrize("error", [RuntimeError, TypeError])  # the layout probe expects the first
def test_a_copy_that_fails_leaves_the_pass_to_the_model_itself(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: type[Exception]
) -> None:
    torch.manual_seed(0)
    monkeypatch.setattr(inference, "folded", lambda model: Broken(error))
    model, x, norm = ConvBN().eval(), synthetic(400, seed=7), Normalizer.of(Recipe(), CPU)
    assert same_predictions(infer(model, x, norm, CPU), float32(model, x, norm)) == (0, 0)
    logged = capsys.readouterr().out
    assert "the folded copy raised" in logged and f"{error.__name__}: the copy broke" in logged


class OwnForward(nn.Linear):
    """A student's Linear with a forward of its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def two_convs() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(4), nn.Flatten(), OwnForward(8 * 8 * 8, 10),
    )  # fmt: skip


def test_the_fast_pass_keeps_the_image_reading_convolution_and_linear_layers_in_float32() -> None:
    torch.manual_seed(0)
    model = two_convs()
    seen: dict[str, torch.Tensor] = {}
    model[0].register_forward_pre_hook(lambda m, args: seen.update(image=args[0]))
    for name, index in (("first", 0), ("second", 2), ("linear", 7)):
        model[index].register_forward_hook(lambda m, args, out, name=name: seen.update({name: out}))
    norm, data = Normalizer.of(Recipe(), CPU), to_device(synthetic(40), CPU)
    fast = logits(model.eval(), data, norm, Layout(), 32, dtype=torch.bfloat16)
    dtypes = {name: seen[name].dtype for name in ("first", "second", "linear")}
    assert dtypes == {"first": torch.bfloat16, "second": torch.bfloat16, "linear": torch.float32}
    with torch.no_grad():  # the first convolution computed in float32, handed on in bfloat16
        torch.testing.assert_close(seen["first"], model[0](seen["image"]).to(torch.bfloat16), rtol=0, atol=0)
    assert fast.dtype == torch.float32 and not any("forward" in vars(m) for m in model)
    exact = float32(model, data, norm)
    assert (fast - exact).abs().max() < 0.1  # OwnForward's doubling kept
    model[2] = nn.Conv2d(8, 4, 3, padding=1)  # now the Linear gets 4 × 8 × 8 features: its forward raises
    with pytest.raises(StageFailure):
        logits(model, data, norm, Layout(), 32, dtype=torch.bfloat16)
    assert not any("forward" in vars(m) for m in model)


class HalfHead(nn.Module):
    """A student who keeps the classifier in float16 and casts to it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1).half()).float()


def test_a_linear_layer_kept_in_another_precision_runs_in_it() -> None:
    torch.manual_seed(0)
    model, norm, data = HalfHead().eval(), Normalizer.of(Recipe(), CPU), to_device(synthetic(40), CPU)
    fast = logits(model, data, norm, Layout(), 32, dtype=torch.bfloat16)
    torch.testing.assert_close(fast, float32(model, data, norm), rtol=0, atol=0)


def test_the_fast_pass_casts_each_weight_once_not_once_per_chunk() -> None:
    torch.manual_seed(0)
    model, norm, data = two_convs().eval(), Normalizer.of(Recipe(), CPU), to_device(synthetic(96), CPU)
    with torch.profiler.profile(record_shapes=True) as profile:
        logits(model, data, norm, Layout(), 32, dtype=torch.bfloat16)  # 3 chunks
    casts = [e for e in profile.events() if e.name == "aten::_to_copy" and e.input_shapes[0] == [8, 8, 3, 3]]
    assert len(casts) == 1


def _batch_sizes(model: nn.Module, x: torch.Tensor, batch_size: int) -> set[int]:
    seen: set[int] = set()
    model.register_forward_pre_hook(lambda module, args: seen.add(len(args[0])))
    infer(model, x, Normalizer.of(Recipe(), CPU), CPU, batch_size)
    return seen


def test_the_cpu_runs_small_chunks_unless_batch_norm_uses_each_batchs_statistics() -> None:
    torch.manual_seed(0)
    x = synthetic(400)
    assert max(_batch_sizes(tiny_net(), x, 200)) == inference.CPU_CHUNK
    by_batch = tiny_net()
    by_batch[1] = nn.BatchNorm2d(8, track_running_stats=False)  # batch statistics in eval mode too
    assert max(_batch_sizes(by_batch, x, 200)) == 200


def test_without_a_fast_precision_the_float32_pass_is_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "fast_dtype", lambda device: None)
    torch.manual_seed(0)
    model, x = tiny_net(), synthetic(300)
    norm = Normalizer.of(Recipe(), CPU)
    plain = logits(model.eval(), to_device(x, CPU), norm, Layout(), 64)
    torch.testing.assert_close(infer(model, x, norm, CPU, 64), plain, rtol=0, atol=0)


def test_a_model_that_views_its_features_runs_channels_last_and_is_handed_back(cifar: Data) -> None:
    model, result = fit(cifar, ViewNet, channels_last=True, epochs=1)
    assert result.nchw_after == "features"
    images, norm = cifar[0], Normalizer.of(Recipe(), CPU)
    assert same_predictions(infer(model, images, norm, CPU), float32(model, images, norm)) == (0, 0)
    assert not any(m._forward_hooks for m in model.modules())
    assert all(p.is_contiguous() for p in model.parameters())


class MemoryBound(nn.Module):
    """Raises what torch raises when a GPU runs out of memory, for more than ``most`` images at once."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most, self.net = most, tiny_net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.most:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} images")
        return self.net(x)


def test_out_of_memory_at_the_graders_chunk_size_goes_on_in_smaller_chunks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    torch.manual_seed(0)
    model, x, norm = MemoryBound(most=16), synthetic(300), Normalizer.of(Recipe(), CPU)
    out = infer(model, x, norm, CPU, batch_size=256)
    assert same_predictions(out, float32(model.net, x, norm)) == (0, 0)
    said = capsys.readouterr().out
    assert "inference: out of cpu memory at 64 images per forward; going on with 32" in said
    assert "at 32 images per forward; going on with 16" in said


def test_out_of_memory_for_one_image_is_the_models_own() -> None:
    model, x, norm = MemoryBound(most=0), synthetic(20), Normalizer.of(Recipe(), CPU)
    with pytest.raises(StageFailure) as failure:
        infer(model, x, norm, CPU, batch_size=256)
    assert failure.value.stage == "inference"
    assert failure.value.message.startswith("forward on test images 0–0 raised OutOfMemoryError: CUDA out of")


def _sample(student: str, task: str) -> tuple[nn.Module, Normalizer]:
    """A sample submission's model with the weights it hands in, and its normalization."""
    root = REPO / "submissions" / student
    entry = yaml.safe_load((root / "submission.yaml").read_text())["tasks"][task]
    stats = entry.get("preprocess") or {"mean": [0.0] * 3, "std": [1.0] * 3}
    file, name = entry.get("model", "model.py:Net").split(":")  # the cifar10-cnn rubric's default
    model = getattr(load_module(root / file), name)()
    state = torch.load(root / entry.get("weights", "weights/model.pt"), weights_only=True)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return model.eval(), Normalizer.from_stats(tuple(stats["mean"]), tuple(stats["std"]), CPU)


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [(1, 3), (1,)])
@pytest.mark.parametrize(("student", "task"), [("B093040051", "task1"), ("B093040054", "cnn")])
def test_predictions_equal_float32_on_the_whole_test_set(
    cifar_tarball: Path,
    tmp_path_factory: pytest.TempPathFactory,
    student: str,
    task: str,
    ranks: tuple[int, ...],
) -> None:
    """The samples' trained weights on all 10,000 test images: not one prediction asked for
    differs (top-1, and top-3 where asked for)."""
    images = load_split(cifar_tarball, "test", tmp_path_factory.getbasetemp() / "test-split").images()
    model, norm = _sample(student, task)
    top1, top3 = same_predictions(
        infer(model, images, norm, CPU, 500, ranks=ranks), float32(model, images, norm)
    )
    assert (top1, top3 if 3 in ranks else 0) == (0, 0)
