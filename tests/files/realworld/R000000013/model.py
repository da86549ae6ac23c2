"""A small ConvNeXt-style network for CIFAR-10.

Blocks follow ConvNeXt (depthwise 7x7, LayerNorm, inverted bottleneck with GELU, layer
scale, stochastic depth); stochastic depth and the initialisation come from timm.
"""
import torch
import torch.nn as nn
from timm.layers import DropPath, trunc_normal_


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) tensor."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = super().forward(x)
        return x.permute(0, 3, 1, 2)


class Block(nn.Module):
    def __init__(self, dim, drop_path=0.0, layer_scale=1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)      # (N, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = (self.gamma * x).permute(0, 3, 1, 2)
        return shortcut + self.drop_path(x)


class ConvNeXtCifar(nn.Module):
    def __init__(self, depths=(2, 2, 4, 2), dims=(32, 64, 128, 256), drop_path_rate=0.1, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=2, stride=2), LayerNorm2d(dims[0], eps=1e-6))
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, sum(depths))]
        stages, k = [], 0
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i > 0:
                stages.append(nn.Sequential(LayerNorm2d(dims[i - 1], eps=1e-6),
                                            nn.Conv2d(dims[i - 1], dim, kernel_size=2, stride=2)))
            stages += [Block(dim, rates[k + j]) for j in range(depth)]
            k += depth
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.stages(self.stem(x))          # (N, 256, 2, 2)
        x = self.norm(x.mean(dim=(2, 3)))
        return self.head(x)
