"""Inception-I3D (Carreira & Zisserman, 2017): Inception-v1 inflated to 3D, the FVD feature network.

Module and parameter names follow the widely used PyTorch port of the Kinetics checkpoints, so its
``rgb_imagenet.pt`` loads with ``strict=True`` (keys such as ``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.running_mean``, ``logits.conv3d.bias``). Padding is TensorFlow "SAME", computed
from the input size at run time, so any clip length and frame size runs through.

FVD (Unterthiner et al., 2018, google-research/frechet_video_distance; also StyleGAN-V's and most
published numbers) compares the *400-d logits* of the Kinetics-400 I3D, the output of the TF-Hub
``i3d-kinetics-400`` module: Mixed_5c, a 2x7x7 average pool (VALID, stride 1), the 1x1x1 logits
layer, averaged over time (deepmind/kinetics-i3d ``averaged_logits``). ``forward`` computes exactly
that (the pool window shrinks to fit clips shorter than 16 frames, where the original has no
output); ``features`` is the 1024-d global mean of Mixed_5c, not what FVD uses.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# Inception branch widths per block: (1x1, 3x3 reduce, 3x3, 3x3 reduce, 3x3, pool proj).
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _triple(v) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def _same_pad(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    """Zero-pad (T, H, W) like TF 'SAME': output size ceil(in / stride), extra pixel at the end.

    Zeros are also right for max pooling here because every pooled tensor follows a ReLU.
    """
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm3d(eps=1e-3, momentum=0.01) + ReLU; the logits layer uses bias only."""

    def __init__(self, cin: int, cout: int, kernel=1, stride=1, bn: bool = True, relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = _triple(kernel), _triple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=not bn)
        self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pooling with TF 'SAME' padding (no parameters, so it adds no state-dict keys)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four parallel branches (1x1 | 1x1->3x3 | 1x1->3x3 | pool->1x1) concatenated on channels."""

    def __init__(self, cin: int, widths: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit3D(cin, widths[0])
        self.b1a, self.b1b = Unit3D(cin, widths[1]), Unit3D(widths[1], widths[2], 3)
        self.b2a, self.b2b = Unit3D(cin, widths[3]), Unit3D(widths[3], widths[4], 3)
        self.b3a, self.b3b = MaxPool3dSame(3, 1), Unit3D(cin, widths[5])
        self.out_channels = widths[0] + widths[2] + widths[4] + widths[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """The RGB I3D trunk up to Mixed_5c plus a 1x1x1 logits layer (400 Kinetics classes by default).

    Input: float (B, 3, T, H, W) in [-1, 1]. ``forward`` gives the time-averaged class logits, the
    representation FVD compares; ``features`` the 1024-d global average of Mixed_5c.
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = [
            ("Conv3d_1a_7x7", Unit3D(in_channels, 64, 7, 2)),
            ("MaxPool3d_2a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D(64, 64)),
            ("Conv3d_2c_3x3", Unit3D(64, 192, 3)),
            ("MaxPool3d_3a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
        ]
        cin = 192
        for name, widths in _MIXED.items():
            if name == "Mixed_4b":
                layers.append(("MaxPool3d_4a_3x3", MaxPool3dSame(3, 2)))
            elif name == "Mixed_5b":
                layers.append(("MaxPool3d_5a_2x2", MaxPool3dSame(2, 2)))
            block = InceptionModule(cin, widths)
            layers.append((name, block))
            cin = block.out_channels
        # Registered at top level (not in a Sequential) so keys match the reference checkpoint.
        self.end_points = [name for name, _ in layers]
        for name, module in layers:
            self.add_module(name, module)
        self.feature_dim = cin
        self.dropout = nn.Dropout(0.5)
        self.logits = Unit3D(cin, num_classes, bn=False, relu=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal convs: a randomly initialised net (tests) then keeps activations at unit scale
        instead of fading towards 1e-8 over ~20 layers; trained checkpoints overwrite all of it."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def mixed_5c(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> the Mixed_5c activations (B, 1024, T/8, H/32, W/32)."""
        for name in self.end_points:
            x = getattr(self, name)(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, 1024) mean of the Mixed_5c activations over T, H, W."""
        return self.mixed_5c(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, num_classes) logits averaged over time, as the Kinetics
        I3D gives them (the FVD features): 2x7x7 average pool, VALID, stride 1, then the 1x1x1
        logits layer, then the mean over the pool's positions (one spatial position at 224 px)."""
        x = self.mixed_5c(x)
        window = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        x = self.logits(self.dropout(F.avg_pool3d(x, window, stride=1)))
        return x.mean(dim=(2, 3, 4))
