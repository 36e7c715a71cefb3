"""DINO's multi-crop augmentation (Caron et al. 2021, Sec. 3.1 "multi-crop"; the official
``DataAugmentationDINO``), batched on tensors with per-image random parameters.

Two global views and ``n_local`` small local views per image; only the global views go through
the teacher (:func:`course_lib.selfsup.training.train_dino`). Where we differ from the official
code: torchvision's v2 transforms draw one set of parameters per call (the same crop for a whole
batch), so random resized crops go through ``torchvision.ops.roi_align`` and flips, colour
jitter, grayscale, Gaussian blur and solarisation are written as tensor ops; the blur's sigma
scales with the crop size (official 0.1-2.0 px at 224 px); the colour jitter runs in a fixed
order (brightness, contrast, saturation, hue; torchvision shuffles it per image).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from course_lib.selfsup.dino import DINOConfig

__all__ = ["MultiCropAugment"]


# ----------------------------------------------------------------------------------------------
# Multi-crop augmentation, batched with per-image random parameters


def _luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 grey (as torchvision's rgb_to_grayscale), (B, 1, H, W)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _hue_shift(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of (B, 3, H, W) images by ``turn`` (fractions of a full turn) in YIQ space."""
    ang = 2 * math.pi * turn
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                       device=x.device, dtype=x.dtype)
    inv = torch.linalg.inv(yiq)
    rot = torch.zeros(len(ang), 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    c, s = torch.cos(ang), torch.sin(ang)
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = inv @ rot @ yiq
    return torch.einsum("bij,bjhw->bihw", m, x)


class MultiCropAugment:
    """DINO's data augmentation (official ``DataAugmentationDINO``) on a batch of images.

    ``__call__(images)`` takes float images (B, 3, H, W) in [0, 1] and returns the list
    ``[global_1, global_2, local_1, ..., local_n]`` of normalised crops (B, 3, S, S): global views
    ``RandomResizedCrop(size, scale=global_scale)``, local views ``(local_size, local_scale)``;
    each with a horizontal flip (p 0.5), colour jitter (p 0.8; brightness 0.4, contrast 0.4,
    saturation 0.2, hue 0.1 at strength 1), grayscale (p 0.2); Gaussian blur with probability
    1.0 / 0.1 / 0.5 (global 1 / global 2 / locals) and solarisation (p 0.2) on global 2 only.
    Every image draws its own parameters (``generator`` makes it reproducible).
    """

    def __init__(self, cfg: DINOConfig, generator: torch.Generator | None = None):
        self.cfg = cfg
        self.gen = generator

    # -- random numbers on the CPU generator, moved to the images' device ---------------------
    def _rand(self, *shape, device) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen).to(device)

    def crop(self, x: torch.Tensor, size: int, scale: tuple[float, float]) -> torch.Tensor:
        """Per-image ``RandomResizedCrop``: area fraction in ``scale``, aspect ratio in [3/4, 4/3]
        (log-uniform), up to 10 tries then the whole image (as torchvision); the crop is resampled
        to ``size`` x ``size`` by ``roi_align`` (bilinear, averaging several samples per output
        pixel when the crop is larger than the output)."""
        from torchvision.ops import roi_align

        B, _, H, W = x.shape
        tries = 10
        area = H * W * (scale[0] + (scale[1] - scale[0]) * self._rand(B, tries, device="cpu"))
        logr = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * self._rand(B, tries, device="cpu")
        ratio = torch.exp(logr)
        w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        ok = (w <= W) & (h <= H)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.zeros(B, dtype=torch.long))
        w = torch.where(ok.any(1), w[torch.arange(B), first], torch.full((B,), float(W)))
        h = torch.where(ok.any(1), h[torch.arange(B), first], torch.full((B,), float(H)))
        x0 = (W - w) * self._rand(B, device="cpu")
        y0 = (H - h) * self._rand(B, device="cpu")
        boxes = torch.stack([torch.arange(B, dtype=torch.float32), x0, y0, x0 + w, y0 + h], 1)
        return roi_align(x, boxes.to(x.device, x.dtype), output_size=(size, size), spatial_scale=1.0,
                         sampling_ratio=-1, aligned=True)

    def flip(self, x: torch.Tensor) -> torch.Tensor:
        f = self._rand(len(x), device=x.device) < 0.5
        return torch.where(f.view(-1, 1, 1, 1), x.flip(-1), x)

    def color(self, x: torch.Tensor) -> torch.Tensor:
        """ColorJitter(0.4, 0.4, 0.2, hue) with probability 0.8, then grayscale with p 0.2; all four
        ranges scale with ``color_jitter``, the hue range is ``hue_jitter`` (official 0.1)."""
        B, dev, s = len(x), x.device, self.cfg.color_jitter
        if s > 0:
            on = (self._rand(B, device=dev) < 0.8).view(-1, 1, 1, 1)
            u = self._rand(B, 4, device=dev) * 2 - 1  # in [-1, 1]
            b, c, sat = 1 + 0.4 * s * u[:, 0], 1 + 0.4 * s * u[:, 1], 1 + 0.2 * s * u[:, 2]
            hue = self.cfg.hue_jitter * s * u[:, 3]
            y = (x * b.view(-1, 1, 1, 1)).clamp(0, 1)
            m = _luma(y).mean((2, 3), keepdim=True)
            y = ((y - m) * c.view(-1, 1, 1, 1) + m).clamp(0, 1)
            g = _luma(y)
            y = ((y - g) * sat.view(-1, 1, 1, 1) + g).clamp(0, 1)
            y = _hue_shift(y, hue).clamp(0, 1)
            x = torch.where(on, y, x)
        gray = (self._rand(B, device=dev) < 0.2).view(-1, 1, 1, 1)
        return torch.where(gray, _luma(x).expand_as(x), x)

    def blur(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Gaussian blur with probability ``p``, sigma uniform in [0.1, 2.0] * size / 224."""
        if not self.cfg.blur or p <= 0:
            return x
        B, C, S, _ = x.shape
        on = self._rand(B, device=x.device) < p
        sigma = (0.1 + 1.9 * self._rand(B, device=x.device)) * S / 224
        radius = max(1, math.ceil(3 * 2.0 * S / 224))
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
        k = k / k.sum(1, keepdim=True)                                  # (B, K)
        k = k.repeat_interleave(C, 0)                                   # (B*C, K)
        y = x.reshape(1, B * C, S, S)
        y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
        y = F.conv2d(y, k.view(B * C, 1, 1, -1), groups=B * C)
        y = F.conv2d(y, k.view(B * C, 1, -1, 1), groups=B * C)
        return torch.where(on.view(-1, 1, 1, 1), y.view(B, C, S, S), x)

    def solarize(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if not self.cfg.solarize or p <= 0:
            return x
        on = (self._rand(len(x), device=x.device) < p).view(-1, 1, 1, 1)
        return torch.where(on & (x >= 0.5), 1 - x, x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.cfg.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        s = torch.tensor(self.cfg.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - m) / s

    def view(self, x: torch.Tensor, size: int, scale, blur_p: float, solarize_p: float) -> torch.Tensor:
        v = self.color(self.flip(self.crop(x, size, scale)))
        return self.normalize(self.solarize(self.blur(v, blur_p), solarize_p))

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        cfg = self.cfg
        crops = [self.view(x, cfg.image_size, cfg.global_scale, 1.0, 0.0),
                 self.view(x, cfg.image_size, cfg.global_scale, 0.1, 0.2)]
        crops += [self.view(x, cfg.local_size, cfg.local_scale, 0.5, 0.0) for _ in range(cfg.n_local)]
        return crops
