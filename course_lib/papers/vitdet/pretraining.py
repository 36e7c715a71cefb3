"""MAE pretraining of the plain backbone (Table 4): He et al. 2022's masked autoencoder around
the course's ViT, the encoder that ViTDet later fine-tunes as its backbone. 75% of the patches
are dropped at random (:func:`random_masking`), the encoder sees only the visible ones, a light
decoder with mask tokens predicts the per-patch normalised pixels, and the MSE is taken on the
masked patches only (:func:`mae_loss`); :class:`MaskedAutoencoder` puts it together.
"""
from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from course_lib.models.vit import Block, VisionTransformer


# --------------------------------------------------------------------------------------------
# MAE pretraining (Table 4)
# --------------------------------------------------------------------------------------------
def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, N, p*p*3), patches in row-major order (the ViT's token order)."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


def random_masking(batch: int, num_tokens: int, mask_ratio: float, device=None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking by sorting uniform noise. Returns ``keep`` (B, n_visible)
    indices of the visible tokens, ``mask`` (B, N) with 1 = masked (removed) and ``restore``
    (B, N), the permutation that puts [visible, mask tokens] back in image order."""
    n_keep = int(round(num_tokens * (1 - mask_ratio)))
    noise = torch.rand(batch, num_tokens, device=device, generator=generator)
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    keep = shuffle[:, :n_keep]
    mask = torch.ones(batch, num_tokens, device=device)
    mask[:, :n_keep] = 0
    mask = torch.gather(mask, 1, restore)
    return keep, mask, restore


def mae_loss(pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor, patch_size: int,
             norm_pix: bool = True) -> torch.Tensor:
    """MAE's loss: per-patch MSE between the prediction and the target pixels, the target
    normalised by each patch's own mean and variance (``norm_pix``), averaged over the masked
    patches only: sum_i m_i * mse_i / sum_i m_i."""
    target = patchify(images, patch_size)
    if norm_pix:
        mean = target.mean(-1, keepdim=True)
        var = target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


class MaskedAutoencoder(nn.Module):
    """A compact MAE around one of our :class:`VisionTransformer` encoders (the one that is later
    fine-tuned): the encoder (patch embedding, position embedding, class token, blocks, final
    norm) runs on the ~25% visible patches only; a light decoder (linear embedding, a learnt mask
    token, its own position embedding, ``decoder_depth`` ViT blocks of width ``decoder_dim``)
    predicts every patch's pixels; :func:`mae_loss` scores the masked ones. ``forward`` returns
    ``(loss, pred, mask)``."""

    def __init__(self, encoder: VisionTransformer, decoder_dim: int = 64, decoder_depth: int = 1,
                 decoder_heads: int = 2, mask_ratio: float = 0.75, norm_pix: bool = True) -> None:
        super().__init__()
        self.encoder, self.mask_ratio, self.norm_pix = encoder, mask_ratio, norm_pix
        D, N = encoder.embed_dim, encoder.patch_embed.num_patches
        self.patch_size = encoder.patch_size[0]
        self.decoder_embed = nn.Linear(D, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, N + 1, decoder_dim))
        self.decoder_blocks = nn.ModuleList([Block(decoder_dim, decoder_heads, 2.0) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size ** 2 * 3)
        trunc_normal_(self.decoder_pos_embed, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in (self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()):
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def encode(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Visible patches only: (B, 1 + n_visible, D) after the encoder's final norm."""
        enc = self.encoder
        x = enc.patch_embed(images) + enc.pos_embed[:, enc.num_prefix_tokens:]
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in enc.blocks:
            x, _ = blk(x)
        return enc.norm(x)

    def decode(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """Visible latents + mask tokens, back in image order -> predicted pixels (B, N, p*p*3)."""
        x = self.decoder_embed(latent)
        B, n_vis = x.shape[0], x.shape[1] - 1
        N = restore.shape[1]
        x_ = torch.cat([x[:, 1:], self.mask_token.expand(B, N - n_vis, -1)], dim=1)
        x_ = torch.gather(x_, 1, restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x, _ = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None):
        N = self.encoder.patch_embed.num_patches
        keep, mask, restore = random_masking(images.shape[0], N, self.mask_ratio, images.device, generator)
        pred = self.decode(self.encode(images, keep), restore)
        return mae_loss(pred, images, mask, self.patch_size, self.norm_pix), pred, mask

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """(masked input, reconstruction in pixel space, original) for plotting; the normalised
        prediction is mapped back with each patch's true mean and std, as the MAE paper shows."""
        loss, pred, mask = self(images, generator)
        p = self.patch_size
        target = patchify(images, p)
        if self.norm_pix:
            pred = pred * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
        pred = torch.where(mask[..., None].bool(), pred, target)
        masked = target * (1 - mask[..., None])
        return _unpatchify(masked, p, images.shape[-1]), _unpatchify(pred, p, images.shape[-1]), images


def _unpatchify(x: torch.Tensor, p: int, size: int) -> torch.Tensor:
    B, N, _ = x.shape
    g = size // p
    return x.reshape(B, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(B, 3, size, size)
