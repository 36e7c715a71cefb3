"""STEGO's refinement at evaluation: a dense CRF (Krähenbühl & Koltun 2011) by mean-field
inference, with the official kernels and iterations."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

# Official CRF: 10 mean-field iterations, gaussian (sxy 1, compat 3), bilateral (sxy 67, srgb 3, compat 4)
OFFICIAL_CRF = dict(iters=10, gauss_sxy=1.0, gauss_w=3.0, bi_sxy=67.0, bi_srgb=3.0, bi_w=4.0)

CRF_KERNEL_ELEMENTS = 4e7  # kernel entries built at once by dense_crf (160 MB in float32)


def dense_crf(images: torch.Tensor, logits: torch.Tensor | Sequence[torch.Tensor], iters: int = 10,
              gauss_sxy: float = 1.0, gauss_w: float = 3.0, bi_sxy: float = 67.0, bi_srgb: float = 3.0,
              bi_w: float = 4.0, max_side: int = 96) -> torch.Tensor | list[torch.Tensor]:
    """Mean-field inference of a fully connected CRF (Krähenbühl & Koltun 2011), as STEGO's
    refinement: unary = -log softmax(logits), Potts pairwise terms with a gaussian kernel
    exp(-|p_i - p_j|^2 / 2 gauss_sxy^2) and a bilateral kernel
    exp(-|p_i - p_j|^2 / 2 bi_sxy^2 - |I_i - I_j|^2 / 2 bi_srgb^2) (pixels; colours 0-255),
    symmetrically normalised as in densecrf; each iteration
    ``Q <- softmax(log p + gauss_w K_g Q + bi_w K_b Q)``. Dense N x N kernels, so images larger
    than ``max_side`` are processed at that side. ``images`` uint8 (B, 3, H, W); ``logits``
    (B, C, h, w) at any size, or a list of such (several label sets refined with one kernel
    build). Returns probabilities (B, C, H, W) at the image's size (a list for a list)."""
    many = isinstance(logits, (list, tuple))
    logits = list(logits) if many else [logits]
    B, _, H, W = images.shape
    scale = min(1.0, max_side / max(H, W))
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    chunk = max(1, int(CRF_KERNEL_ELEMENTS // (h * w) ** 2))  # images per kernel build
    if B > chunk:
        kw = dict(iters=iters, gauss_sxy=gauss_sxy, gauss_w=gauss_w, bi_sxy=bi_sxy, bi_srgb=bi_srgb,
                  bi_w=bi_w, max_side=max_side)
        parts = [dense_crf(images[s:s + chunk], [lg[s:s + chunk] for lg in logits], **kw)
                 for s in range(0, B, chunk)]
        out = [torch.cat([p[j] for p in parts]) for j in range(len(logits))]
        return out if many else out[0]
    dev = logits[0].device
    img = images.to(dev).float()
    if (h, w) != (H, W):
        img = F.interpolate(img, (h, w), mode="bilinear", align_corners=False, antialias=True)
    # bilateral kernel, dense (B, n, n): positions in original pixels, colours 0-255
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=dev),
                            torch.arange(w, dtype=torch.float32, device=dev), indexing="ij")
    pos = torch.stack([yy, xx], -1).view(-1, 2) / scale
    rgb = img.flatten(2).transpose(1, 2)                                  # (B, n, 3)
    k_bi = torch.cdist(rgb, rgb).square_().mul_(-0.5 / bi_srgb ** 2)
    k_bi = k_bi.add_(torch.cdist(pos, pos).square_().mul_(-0.5 / bi_sxy ** 2)).exp_()
    d_bi = k_bi.sum(-1).rsqrt().unsqueeze(1)                              # (B, 1, n)
    # gaussian kernel (a local blur): a depthwise convolution, truncated at 4 sigma
    sig = gauss_sxy * scale
    r = max(1, min(int(math.ceil(4 * sig)), max(h, w) - 1))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=dev)
    g1 = torch.exp(-0.5 * (t / sig) ** 2)
    g2 = (g1[:, None] * g1[None, :])[None, None]                          # (1, 1, 2r+1, 2r+1)

    def blur(x):  # (B, C, h, w) -> the gaussian kernel applied per channel (zero padding)
        C = x.shape[1]
        return F.conv2d(x, g2.expand(C, 1, -1, -1), padding=r, groups=C)

    d_g = blur(torch.ones(1, 1, h, w, device=dev)).rsqrt()                # (1, 1, h, w)
    out = []
    for lg in logits:
        lg = F.interpolate(lg.float(), (h, w), mode="bilinear", align_corners=False)
        unary = F.log_softmax(lg, 1)                                      # (B, C, h, w) = -U
        q = unary.softmax(1)
        for _ in range(iters):
            # D^-1/2 K D^-1/2 Q for each kernel (densecrf's NORMALIZE_SYMMETRIC); Potts compat
            m_g = d_g * blur(d_g * q)
            m_b = (d_bi * torch.bmm((d_bi * q.flatten(2)), k_bi)).view_as(q)
            q = (unary + gauss_w * m_g + bi_w * m_b).softmax(1)
        if (h, w) != (H, W):
            q = F.interpolate(q, (H, W), mode="bilinear", align_corners=False)
        out.append(q)
    return out if many else out[0]
