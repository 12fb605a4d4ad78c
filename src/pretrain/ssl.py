"""Self-supervised building blocks: two-view augmentation, projector heads and the SimCLR / SimSiam losses.

Both methods learn by making two random views of one image agree. SimCLR (Chen et al. 2020) also pushes
the views of other images in the batch away (NT-Xent); SimSiam (Chen & He 2021) has no negatives and avoids
collapse with a predictor head and a stop-gradient.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy for N positive pairs (z1[i], z2[i]).

    Each of the 2N embeddings must pick its partner out of the other 2N - 1 by cosine similarity / T;
    the loss is the mean cross entropy of that choice."""
    n = len(z1)
    with torch.autocast(z1.device.type, enabled=False):  # similarities / T need full precision
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        logits = z @ z.T / temperature
        logits.fill_diagonal_(float("-inf"))  # an embedding is never its own candidate
        partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(logits, partner)


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam's symmetric negative cosine: each view's prediction p matches the other view's projection z,
    which is treated as a constant (stop-gradient). Ranges from -1 (perfect) to 1."""
    def negative_cosine(p, z):
        return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()
    return (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2


def mlp(dims: list[int], last_bn: bool) -> nn.Sequential:
    """Linear-BN-ReLU layers between `dims`; the last layer is linear (with BN when `last_bn`)."""
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=last and not last_bn))
        if not last or last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=not last))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SSLNet(nn.Module):
    """A train.py backbone (timm interface) with a projector, and for SimSiam a predictor, on its pooled
    features. Only the backbone is kept for fine-tuning; the heads are thrown away."""

    def __init__(self, backbone: nn.Module, method: str, proj_dim: int, hidden_dim: int):
        super().__init__()
        self.backbone, self.method = backbone, method
        # What forward_head(pre_logits=True) returns: some timm heads (MobileNetV3, ConvNeXt with a hidden
        # head layer) widen the last stage's num_features.
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.projector = mlp([width, hidden_dim, proj_dim], last_bn=method == "simsiam")
        self.predictor = mlp([proj_dim, hidden_dim // 4, proj_dim], last_bn=False) if method == "simsiam" else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features: what the classifier head sees after fine-tuning."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, temperature: float) -> torch.Tensor:
        # One pass over both views: BatchNorm sees the whole 2N batch, as in SimCLR.
        z = self.projector(self.features(torch.cat([x1, x2])))
        z1, z2 = z.chunk(2)
        if self.method == "simclr":
            return nt_xent(z1, z2, temperature)
        p1, p2 = self.predictor(z).chunk(2)
        return simsiam_loss(p1, p2, z1, z2)


class TwoViews:
    """Random views of a float NCHW batch in [0, 255], batched on the device.

    A random crop of `crop_scale` of the area (aspect 3:4 to 4:3) resized back, rotated up to `rotate_deg`,
    optionally mirrored; then brightness/contrast jitter, and Gaussian noise on a share of the images. The
    crop is the view that matters most (SimCLR's ablation): parts of an object must map to the whole."""

    def __init__(self, crop_scale: tuple[float, float], rotate_deg: float, jitter: float, noise_prob: float,
                 flips: str):
        self.crop_scale, self.rotate_deg, self.jitter, self.noise_prob = crop_scale, rotate_deg, jitter, noise_prob
        self.flips = flips

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, device = len(x), x.device

        def uniform(low: float, high: float, *shape) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, *shape, generator=generator, device=device)

        area = uniform(*self.crop_scale)
        log_ratio = uniform(math.log(3 / 4), math.log(4 / 3))
        # Crop width/height as fractions of the image: the drawn area and aspect, with a side that would not
        # fit capped at the whole image and the other side keeping the area.
        crop_w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
        crop_h = (area / crop_w).clamp(max=1.0)
        crop_w = area / crop_h
        # The crop centre stays inside the image: offset up to (1 - size) in [-1, 1] units.
        centre = torch.stack([uniform(-1, 1) * (1 - crop_w), uniform(-1, 1) * (1 - crop_h)], dim=1)
        angle = uniform(-self.rotate_deg, self.rotate_deg) * (math.pi / 180)
        theta = crop_theta(crop_w, crop_h, angle, centre, x.shape[2], x.shape[3])
        for axis, flag in ((0, "h"), (1, "v")):
            if flag in self.flips:  # mirror the sampling coordinate along that axis for half the images
                theta[:, :, axis] *= torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)[:, None]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.jitter:
            contrast = uniform(1 - self.jitter, 1 + self.jitter, 1, 1, 1)
            brightness = uniform(-self.jitter, self.jitter, 1, 1, 1) * 255
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * contrast + mean + brightness
        if self.noise_prob:
            noisy = (uniform(0, 1) < self.noise_prob).float()[:, None, None, None]
            noise = torch.randn(x.shape, generator=generator, device=device) * uniform(0, 0.1, 1, 1, 1) * 255
            x = x + noisy * noise
        return x.clamp(0, 255)


def crop_theta(crop_w: torch.Tensor, crop_h: torch.Tensor, angle: torch.Tensor, centre: torch.Tensor, height: int,
               width: int) -> torch.Tensor:
    """affine_grid matrices (N, 2, 3) that sample a rotated crop: output [-1, 1] coordinates are scaled to the
    crop's half-sizes (fractions of the image), rotated by `angle` (radians, in pixels: the aspect ratio is
    undone) and moved to `centre`. Scale first, then rotate, so the crop stays a rectangle."""
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(len(angle), 2, 3, device=angle.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * crop_w, -sin * crop_h * (height / width)
    theta[:, 1, 0], theta[:, 1, 1] = sin * crop_w * (width / height), cos * crop_h
    theta[:, :, 2] = centre
    return theta
