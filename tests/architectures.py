"""Parameters and MACs of a network computed layer by layer from a description of it, under
each counter's conventions: the second way of counting the models in tests/files/realworld/
(tests/test_realworld.py compares these with what the grader measures).

The conventions, read from the installed sources (ultralytics-thop 2.2.3, ptflops 0.7.5 with
its pytorch backend). Batch of one, n = elements of the layer's input (= its output for
elementwise layers):

  layer                      thop                                   ptflops
  Conv2d (k×k, groups g)     out elements × in/g × k²               same + out elements if bias
  Linear                     in × out                               in × out + out if bias
  BatchNorm2d (affine)       4n (2 per element, doubled if affine)  2n
  nn.ReLU                    0                                      2n (its hook, and the F.relu it calls)
  nn.ReLU6                   0                                      n (it calls F.hardtanh, not patched)
  F.relu                     0                                      n
  torch.relu, x.relu()       0                                      0
  nn.MaxPool2d               0                                      2n (its hook, and F.max_pool2d)
  nn.AvgPool2d               window inputs + out elements           2n
  nn.AdaptiveAvgPool2d       window inputs + out elements           2n
  F.max_pool2d, F.avg_pool2d,
    F.adaptive_avg_pool2d    0                                      n
  nn.Softmax(dim=1)          rows × (3 × classes − 1)               n (it calls F.softmax)
  F.log_softmax              0                                      0
  a + b, a += b, a * b       0                                      0 (only torch.add / Tensor.add count)
  cat, view, flatten, pad,
    chunk, Dropout, sigmoid  0                                      0

Every count here is exact for the layers above; a description uses no other layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field


@dataclass
class Cost:
    params: int = 0
    thop: int = 0
    ptflops: int = 0


@dataclass
class Walk:
    """A feature map of shape (c, h, w) walked through a network; each layer adds its cost.

    Branches (``fork``) share the Cost, so a residual block or an Inception module is
    described as its branches, joined again by ``add`` or ``cat``.
    """

    cost: Cost = field(default_factory=Cost)
    c: int = 3
    h: int = 32
    w: int = 32

    @property
    def n(self) -> int:
        return self.c * self.h * self.w

    def fork(self, c: int | None = None) -> Walk:
        """A branch of this map; ``c`` for a branch that sees only some of its channels."""
        branch = copy.copy(self)
        branch.c = self.c if c is None else c
        return branch

    def conv(
        self, out: int, k: int, stride: int = 1, pad: int = 0, groups: int = 1, bias: bool = True
    ) -> Walk:
        self.h, self.w = _out_size(self.h, k, stride, pad), _out_size(self.w, k, stride, pad)
        assert self.c % groups == 0 and out % groups == 0
        per_output = self.c // groups * k * k
        out_elements = out * self.h * self.w
        self.cost.params += out * per_output + (out if bias else 0)
        self.cost.thop += out_elements * per_output
        self.cost.ptflops += out_elements * per_output + (out_elements if bias else 0)
        self.c = out
        return self

    def bn(self) -> Walk:
        self.cost.params += 2 * self.c
        self.cost.thop += 4 * self.n
        self.cost.ptflops += 2 * self.n
        return self

    def relu(self, via: str) -> Walk:
        self.cost.ptflops += {"nn.ReLU": 2, "nn.ReLU6": 1, "F.relu": 1, "torch.relu": 0}[via] * self.n
        return self

    def maxpool(self, k: int, stride: int | None = None, pad: int = 0, via: str = "nn") -> Walk:
        self.cost.ptflops += _pool_hooks(via) * self.n
        stride = k if stride is None else stride
        self.h, self.w = _out_size(self.h, k, stride, pad), _out_size(self.w, k, stride, pad)
        return self

    def avgpool(self, k: int, stride: int | None = None, via: str = "nn") -> Walk:
        """Average pooling without padding."""
        stride = k if stride is None else stride
        self.cost.ptflops += _pool_hooks(via) * self.n
        ho, wo = _out_size(self.h, k, stride, 0), _out_size(self.w, k, stride, 0)
        if via == "nn":
            # thop adds every input of every window, then divides once per output
            self.cost.thop += self.c * (ho * k) * (wo * k) + self.c * ho * wo
        self.h, self.w = ho, wo
        return self

    def global_avgpool(self, via: str) -> Walk:
        """To 1×1: ``nn.AdaptiveAvgPool2d(1)``, ``F.adaptive_avg_pool2d(x, 1)`` or
        ``F.avg_pool2d(x, size)``; for thop one window covers the whole map."""
        self.cost.ptflops += _pool_hooks(via) * self.n
        if via == "nn":
            self.cost.thop += self.n + self.c
        self.h = self.w = 1
        return self

    def flatten(self) -> Walk:
        self.c, self.h, self.w = self.n, 1, 1
        return self

    def linear(self, out: int, bias: bool = True) -> Walk:
        assert self.h == self.w == 1, "flatten first"
        self.cost.params += self.c * out + (out if bias else 0)
        self.cost.thop += self.c * out
        self.cost.ptflops += self.c * out + (out if bias else 0)
        self.c = out
        return self

    def softmax(self, via: str) -> Walk:
        """Over the classes of one row of logits."""
        if via == "nn.Softmax":
            self.cost.thop += 3 * self.c - 1  # c exponentials, c - 1 additions, c divisions
            self.cost.ptflops += self.c
        else:
            assert via == "F.log_softmax"
        return self

    def reshape(self, c: int, h: int, w: int) -> Walk:
        """Slicing, zero-padding or channel shuffling: no parameters, no counted MACs."""
        self.c, self.h, self.w = c, h, w
        return self

    def add(self, other: Walk) -> Walk:
        """``a + b`` or ``a += b`` (Python's operators, which neither counter sees)."""
        assert (self.c, self.h, self.w) == (other.c, other.h, other.w)
        return self

    def cat(self, *others: Walk) -> Walk:
        assert all((o.h, o.w) == (self.h, self.w) for o in others)
        self.c += sum(o.c for o in others)
        return self


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def _pool_hooks(via: str) -> int:
    # ptflops counts a pooling module's input in its hook and again in the functional it calls
    return {"nn": 2, "F": 1}[via]


# --- the architectures, as the students wrote them -----------------------------------------


def lenet(widths: tuple[int, int, int, int], pool: str) -> Cost:
    """Two 5×5 convs and three linears: the CIFAR-10 tutorial's Net and LeNet-5."""
    c1, c2, f1, f2 = widths
    x = Walk()
    x.conv(c1, 5).relu("F.relu").maxpool(2, via=pool)
    x.conv(c2, 5).relu("F.relu").maxpool(2, via=pool)
    x.flatten().linear(f1).relu("F.relu").linear(f2).relu("F.relu").linear(10)
    return x.cost


def simple_cnn() -> Cost:
    """R000000002: two conv-BN-ReLU pairs per stage, max-pool, two linears."""
    x = Walk()
    for width in (32, 64):
        for _ in range(2):
            x.conv(width, 3, pad=1).bn().relu("nn.ReLU")
        x.maxpool(2)
    x.flatten().linear(128).relu("torch.relu").linear(10)
    return x.cost


VGG11 = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M"]
VGG16 = [16, 16, "M", 32, 32, "M", 64, 64, 64, "M", 128, 128, 128, "M", 128, 128, 128, "M"]


def vgg(layout: list, conv_bias: bool, head: tuple[int, ...], tail_avgpool: bool) -> Cost:
    """conv-BN-ReLU per number, 2×2 max-pool per "M"; then linears of ``head`` widths."""
    x = Walk()
    for v in layout:
        if v == "M":
            x.maxpool(2)
        else:
            x.conv(v, 3, pad=1, bias=conv_bias).bn().relu("nn.ReLU")
    if tail_avgpool:
        x.avgpool(1, 1)
    x.flatten()
    for width in head[:-1]:
        x.linear(width).relu("nn.ReLU")
    x.linear(head[-1])
    return x.cost


def basic_block(x: Walk, planes: int, stride: int, shortcut: str = "conv", relu: str = "F.relu") -> Walk:
    """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU (``relu``: how it is applied).
    ``shortcut`` is how a change of shape is bridged: a 1×1 conv with BN, or "pad"
    (subsample and zero-pad: option A)."""
    main = x.fork().conv(planes, 3, stride, 1, bias=False).bn().relu(relu)
    main.conv(planes, 3, 1, 1, bias=False).bn()
    skip = x.fork()
    if stride != 1 or x.c != planes:
        if shortcut == "conv":
            skip.conv(planes, 1, stride, bias=False).bn()
        else:
            skip.reshape(planes, x.h // stride, x.w // stride)
    return main.add(skip).relu(relu)


def resnet(
    widths: tuple[int, ...],
    blocks: tuple[int, ...],
    shortcut: str = "conv",
    relu: str = "F.relu",
    pool: str = "F",
) -> Cost:
    """ResNet with a 3×3 stem for 32×32 inputs; the first stage keeps the resolution."""
    x = Walk().conv(widths[0], 3, 1, 1, bias=False).bn().relu(relu)
    for i, (planes, n) in enumerate(zip(widths, blocks, strict=True)):
        for j in range(n):
            x = basic_block(x, planes, 2 if i > 0 and j == 0 else 1, shortcut, relu)
    return x.global_avgpool(pool).flatten().linear(10).cost


def torchvision_resnet18_cifar() -> Cost:
    """R000000023: torchvision's resnet18(num_classes=10) with a 3×3 stem and the max-pool
    replaced by nn.Identity (counted by neither): nn.ReLU modules, nn.AdaptiveAvgPool2d."""
    return resnet((64, 128, 256, 512), (2, 2, 2, 2), relu="nn.ReLU", pool="nn")


def preact_resnet18() -> Cost:
    """R000000007: BN-ReLU before each conv, 1×1 projection taken from the activated input."""
    x = Walk().conv(16, 3, 1, 1, bias=False)
    for i, planes in enumerate((16, 32, 64, 128)):
        for j in range(2):
            stride = 2 if i > 0 and j == 0 else 1
            act = x.fork().bn().relu("F.relu")
            skip = act.fork().conv(planes, 1, stride, bias=False) if stride != 1 or x.c != planes else x
            main = act.fork().conv(planes, 3, stride, 1, bias=False)
            main.bn().relu("F.relu").conv(planes, 3, 1, 1, bias=False)
            x = main.add(skip)
    return x.bn().relu("F.relu").global_avgpool("F").flatten().linear(10).cost


def conv_bn(x: Walk, out: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True) -> Walk:
    x.conv(out, k, stride, k // 2, groups, bias=False).bn()
    return x.relu("nn.ReLU") if relu else x


def shufflenet_v2_half() -> Cost:
    """R000000009: ShuffleNetV2 0.5×, stages of 48/96/192 channels with 3/7/3 basic units."""
    x = conv_bn(Walk(), 24, 3)
    for out, units in ((48, 3), (96, 7), (192, 3)):
        mid = out // 2
        left = conv_bn(conv_bn(x.fork(), x.c, 3, 2, groups=x.c, relu=False), mid, 1)
        right = conv_bn(x.fork(), mid, 1)
        right = conv_bn(conv_bn(right, mid, 3, 2, groups=mid, relu=False), mid, 1)
        x = left.cat(right)
        for _ in range(units):
            kept = x.fork(mid)
            work = conv_bn(conv_bn(conv_bn(x.fork(mid), mid, 1), mid, 3, groups=mid, relu=False), mid, 1)
            x = kept.cat(work)
    x = conv_bn(x, 1024, 1)
    return x.global_avgpool("F").flatten().linear(10).cost


def mobilenet_v2_half() -> Cost:
    """R000000010: MobileNetV2 at width 0.5, channels rounded to multiples of 8 (written out
    here by hand: 32→16, 16→8, 24→16, 32→16, 64→32, 96→48, 160→80, 320→160; 1280 kept)."""
    x = Walk().conv(16, 3, 1, 1, bias=False).bn().relu("nn.ReLU6")
    stages = [(1, 8, 1, 1), (6, 16, 2, 1), (6, 16, 3, 2), (6, 32, 4, 2), (6, 48, 3, 1), (6, 80, 3, 2),
              (6, 160, 1, 1)]  # fmt: skip
    for t, out, n, s in stages:
        for i in range(n):
            stride = s if i == 0 else 1
            y = x.fork()
            if t != 1:
                y.conv(x.c * t, 1, bias=False).bn().relu("nn.ReLU6")
            y.conv(y.c, 3, stride, 1, groups=y.c, bias=False).bn().relu("nn.ReLU6")
            y.conv(out, 1, bias=False).bn()
            x = y.add(x) if stride == 1 and x.c == out else y
    x.conv(1280, 1, bias=False).bn().relu("nn.ReLU6")
    return x.global_avgpool("F").flatten().linear(10).cost


def densenet_cifar() -> Cost:
    """R000000011: DenseNet-BC, blocks of 6/12/24/16 bottlenecks, growth 12, halving transitions."""
    growth = 12
    x = Walk().conv(2 * growth, 3, 1, 1, bias=False)
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            new = x.fork().bn().relu("F.relu").conv(4 * growth, 1, bias=False)
            new.bn().relu("F.relu").conv(growth, 3, 1, 1, bias=False)
            x = new.cat(x)
        if i < 3:
            x.bn().relu("F.relu").conv(x.c // 2, 1, bias=False).avgpool(2, via="F")
    return x.bn().relu("F.relu").global_avgpool("F").flatten().linear(10).cost


def _cbr(x: Walk, out: int, k: int) -> Walk:
    return x.conv(out, k, pad=k // 2).bn().relu("nn.ReLU")


def inception(x: Walk, n1: int, n3r: int, n3: int, n5r: int, n5: int, pool: int) -> Walk:
    b1 = _cbr(x.fork(), n1, 1)
    b2 = _cbr(_cbr(x.fork(), n3r, 1), n3, 3)
    b3 = _cbr(_cbr(_cbr(x.fork(), n5r, 1), n5, 3), n5, 3)
    b4 = _cbr(x.fork().maxpool(3, 1, 1), pool, 1)
    return b1.cat(b2, b3, b4)


def googlenet_quarter() -> Cost:
    """R000000012: GoogLeNet for 32×32 with every channel count a quarter of the paper's."""
    x = _cbr(Walk(), 48, 3)
    x = inception(inception(x, 16, 24, 32, 4, 8, 8), 32, 32, 48, 8, 24, 16)
    x.maxpool(3, 2, 1)
    for spec in [(48, 24, 52, 4, 12, 16), (40, 28, 56, 6, 16, 16), (32, 32, 64, 6, 16, 16),
                 (28, 36, 72, 8, 16, 16), (64, 40, 80, 8, 32, 32)]:  # fmt: skip
        x = inception(x, *spec)
    x.maxpool(3, 2, 1)
    x = inception(inception(x, 64, 40, 80, 8, 32, 32), 96, 48, 96, 12, 32, 32)
    return x.avgpool(8, 1).flatten().linear(10).cost


def mnist_example_net() -> Cost:
    """R000000014: the MNIST example's network on 3×32×32, ending in F.log_softmax."""
    x = Walk().conv(32, 3).relu("F.relu").conv(64, 3).relu("F.relu").maxpool(2, via="F")
    x.flatten().linear(128).relu("F.relu").linear(10).softmax("F.log_softmax")
    return x.cost


def softmax_head_net() -> Cost:
    """R000000015: three conv-BN-ReLU-pool blocks, two linears and nn.Softmax."""
    x = Walk()
    for width in (32, 64, 128):
        x.conv(width, 3, pad=1).bn().relu("nn.ReLU").maxpool(2)
    x.flatten().linear(256).relu("nn.ReLU").linear(10).softmax("nn.Softmax")
    return x.cost


def custom_resnet_half() -> Cost:
    """R000000016: prep, layer1 + residual, layer2, layer3 + residual, 4×4 max-pool, linear."""

    def down(x: Walk, out: int) -> Walk:  # conv, max-pool, BN, ReLU
        return x.conv(out, 3, pad=1, bias=False).maxpool(2).bn().relu("nn.ReLU")

    def residual(x: Walk) -> Walk:
        r = x.fork()
        for _ in range(2):
            r.conv(x.c, 3, pad=1, bias=False).bn().relu("nn.ReLU")
        return x.add(r)

    x = Walk().conv(32, 3, pad=1, bias=False).bn().relu("nn.ReLU")
    x = residual(down(x, 64))
    x = residual(down(down(x, 128), 256))
    return x.maxpool(4).flatten().linear(10, bias=False).softmax("F.log_softmax").cost


def udacity_net() -> Cost:
    """R000000018: three conv-ReLU-pool stages (16/32/64), linears 1024→500→10."""
    x = Walk()
    for width in (16, 32, 64):
        x.conv(width, 3, pad=1).relu("F.relu").maxpool(2)
    return x.flatten().linear(500).relu("F.relu").linear(10).cost


def regnety_mini() -> Cost:
    """R000000019: RegNetY blocks (1×1, grouped 3×3 with group width 8, SE, 1×1) on a 32-wide stem."""
    x = Walk().conv(32, 3, 1, 1, bias=False).bn().relu("F.relu")
    for depth, width, stride in ((1, 16, 1), (1, 32, 2), (2, 64, 2), (2, 128, 2)):
        for i in range(depth):
            s = stride if i == 0 else 1
            se_width = round(x.c * 0.25)  # squeeze width from the block's input
            y = x.fork().conv(width, 1, bias=False).bn().relu("F.relu")
            y.conv(width, 3, s, 1, groups=width // 8, bias=False).bn().relu("F.relu")
            y.fork().global_avgpool("F").conv(se_width, 1).relu("F.relu").conv(width, 1)  # × sigmoid: free
            y.conv(width, 1, bias=False).bn()
            skip = x.fork().conv(width, 1, s, bias=False).bn() if s != 1 or x.c != width else x
            x = y.add(skip).relu("F.relu")
    return x.global_avgpool("F").flatten().linear(10).cost


def simple_dla_half() -> Cost:
    """R000000021: DLA trees whose roots concatenate their blocks' outputs (1×1 conv, BN, ReLU)."""

    def root(parts: list[Walk], out: int) -> Walk:
        return parts[0].cat(*parts[1:]).conv(out, 1, bias=False).bn().relu("F.relu")

    def tree(x: Walk, out: int, level: int, stride: int) -> Walk:
        if level == 1:
            left = basic_block(x.fork(), out, stride)
            return root([left, basic_block(left.fork(), out, 1)], out)
        skip = basic_block(x.fork(), out, stride)
        sub = tree(x.fork(), out, level - 1, stride)
        return root([skip, sub, basic_block(sub.fork(), out, 1)], out)

    x = Walk()
    for width in (8, 8, 16):
        x.conv(width, 3, 1, 1, bias=False).bn().relu("nn.ReLU")
    for out, level, stride in ((32, 1, 1), (64, 2, 2), (128, 2, 2), (256, 1, 2)):
        x = tree(x, out, level, stride)
    return x.global_avgpool("F").flatten().linear(10).cost


def colab_net() -> Cost:
    """R000000022: conv-BN-ReLU pairs at 32/64/128 with two max-pools, adaptive pool, linear."""
    x = Walk()
    for width, pool in ((32, True), (64, True), (128, False)):
        for _ in range(2):
            x.conv(width, 3, pad=1, bias=False).bn().relu("nn.ReLU")
        if pool:
            x.maxpool(2)
    return x.global_avgpool("nn").flatten().linear(10).cost


def lazy_linear_net() -> Cost:
    """R000000025: two conv-BN-ReLU-max-pool blocks, then nn.LazyLinear layers (plain
    nn.Linear once their first forward has given them their shapes)."""
    x = Walk().conv(32, 3, 1, 1).bn().relu("nn.ReLU").maxpool(2)
    x.conv(64, 3, 1, 1).bn().relu("nn.ReLU").maxpool(2)
    return x.flatten().linear(128).relu("nn.ReLU").linear(10).cost


def functional_dropout_net() -> Cost:
    """R000000026: 5×5 convs with F.relu and F.max_pool2d, F.dropout between the linears."""
    x = Walk().conv(32, 5, 1, 2).relu("F.relu").maxpool(2, via="F")
    x.conv(64, 5, 1, 2).relu("F.relu").maxpool(2, via="F")
    return x.flatten().linear(256).relu("F.relu").linear(10).cost


def coordconv_net() -> Cost:
    """R000000027: a stem, two coordinate channels concatenated (made by linspace: free), two
    strided conv-BN-ReLU layers, global average pooling."""
    x = Walk().conv(16, 3, 1, 1, bias=False).bn().relu("nn.ReLU").reshape(18, 32, 32)
    x.conv(32, 3, 2, 1, bias=False).bn().relu("F.relu").conv(64, 3, 2, 1, bias=False).bn().relu("F.relu")
    return x.global_avgpool("F").flatten().linear(10).cost


def all_conv_sequential() -> Cost:
    """R000000029: a module-level nn.Sequential of conv-BN-ReLU layers (two of stride 2), a
    1×1 conv to the 10 classes, nn.AdaptiveAvgPool2d and nn.Flatten."""
    x = Walk()
    for out, stride in ((32, 1), (32, 2), (64, 1), (64, 2)):
        x.conv(out, 3, stride, 1).bn().relu("nn.ReLU")
    return x.conv(10, 1).global_avgpool("nn").flatten().cost


def num_classes_cnn() -> Cost:
    """R000000030: two pairs of 'same'-padded 3×3 convs with F.relu, each pair followed by an
    nn.MaxPool2d; nn.Dropout (free) around a 256-wide linear layer."""
    x = Walk()
    for width in (32, 64):
        x.conv(width, 3, 1, 1).relu("F.relu").conv(width, 3, 1, 1).relu("F.relu").maxpool(2)
    return x.flatten().linear(256).relu("F.relu").linear(10).cost


def three_block_convnet() -> Cost:
    """R000000031: three conv-BN-nn.ReLU-nn.MaxPool2d blocks doubling the width from 32, then
    one linear layer; its nn.CrossEntropyLoss member is never called in forward."""
    x = Walk()
    for width in (32, 64, 128):
        x.conv(width, 3, pad=1).bn().relu("nn.ReLU").maxpool(2)
    return x.flatten().linear(10).cost


def colab_export_cnn() -> Cost:
    """R000000032: conv-BN-nn.ReLU twice at 32 wide, nn.MaxPool2d, once at 64, nn.MaxPool2d;
    then Dropout, a 256-wide linear layer with nn.ReLU, and the 10-way one."""
    x = Walk()
    x.conv(32, 3, pad=1).bn().relu("nn.ReLU").conv(32, 3, pad=1).bn().relu("nn.ReLU").maxpool(2)
    x.conv(64, 3, pad=1).bn().relu("nn.ReLU").maxpool(2)
    return x.flatten().linear(256).relu("nn.ReLU").linear(10).cost


def _mlpconv(x: Walk, out: int, k: int, pad: int) -> Walk:
    return x.conv(out, k, pad=pad).relu("nn.ReLU").conv(out, 1).relu("nn.ReLU").conv(out, 1).relu("nn.ReLU")


def network_in_network_half() -> Cost:
    """R000000033: two mlpconv blocks 96 wide (k×k conv, two 1×1 convs, nn.ReLU after each),
    the first followed by a padded 3×3/2 nn.MaxPool2d, the second by a 2×2 nn.AvgPool2d; a 3×3
    and two 1×1 convs down to 10 maps, each with nn.ReLU; nn.AdaptiveAvgPool2d(1). Dropout and
    the final squeeze() are free."""
    x = _mlpconv(Walk(), 96, 5, 2).maxpool(3, 2, pad=1)
    x = _mlpconv(x, 96, 5, 2).avgpool(2)
    x.conv(96, 3, pad=1).relu("nn.ReLU").conv(96, 1).relu("nn.ReLU").conv(10, 1).relu("nn.ReLU")
    return x.global_avgpool("nn").cost
