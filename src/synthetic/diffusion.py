"""The diffusion parts: the class-conditional UNet, noise schedule and samplers, pixel ranges, the training
target, and sampling with classifier-free guidance."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from tqdm import tqdm

from src.core.atomic import save_figure
from src.core.repro import derived_seed
from src.data.images import ImageSpec
from src.synthetic.config import GEN_SIZES, GenConfig
from src.train.engine import Runtime


def build_unet(size: str, in_chans: int, num_classes: int, resolution_px: int) -> UNet2DModel:
    """A class-conditional UNet; class index `num_classes` is the null class used for guidance."""
    channels, layers = GEN_SIZES[size]
    levels = len(channels)
    attention = size == "base"  # self-attention pays off only at the sizes a GPU can afford
    down = ("DownBlock2D",) * (levels - 1) + (("AttnDownBlock2D",) if attention else ("DownBlock2D",))
    up = (("AttnUpBlock2D",) if attention else ("UpBlock2D",)) + ("UpBlock2D",) * (levels - 1)
    return UNet2DModel(sample_size=resolution_px, in_channels=in_chans, out_channels=in_chans,
                       layers_per_block=layers, block_out_channels=channels, down_block_types=down,
                       up_block_types=up, num_class_embeds=num_classes + 1, norm_num_groups=8,
                       add_attention=attention)



def build_noise_scheduler(cfg: GenConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type=cfg.prediction, clip_sample=False)



def build_sampler(noise_scheduler: DDPMScheduler, sampler: str, steps: int):
    """The fast sampler over the training noise schedule, set to `steps` denoising steps."""
    if sampler == "ddim":
        # No x0 clipping: diffusers clips the predicted image but not the noise derived from the unclipped
        # one, and with guidance that mismatch wrecked samples (class agreement 0.880 vs 0.992 unclipped).
        out = DDIMScheduler.from_config(noise_scheduler.config, clip_sample=False, set_alpha_to_one=True)
    elif sampler == "dpm":
        out = DPMSolverMultistepScheduler.from_config(noise_scheduler.config, algorithm_type="dpmsolver++",
                                                      thresholding=False, lower_order_final=True)
    else:
        raise ValueError(f"unknown sampler {sampler!r}")
    out.set_timesteps(steps)
    return out



def to_model_range(images: np.ndarray, resolution_px: int) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, R, R) in [-1, 1]; area interpolation when shrinking."""
    out = np.empty((len(images), resolution_px, resolution_px, images.shape[-1]), dtype=np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != (resolution_px, resolution_px):
            image = cv2.resize(image, (resolution_px, resolution_px), interpolation=cv2.INTER_AREA)
        out[i] = image.reshape(resolution_px, resolution_px, -1)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div(127.5).sub(1)



def from_model_range(x: torch.Tensor, spec: ImageSpec) -> np.ndarray:
    """float (N, C, R, R) in [-1, 1] -> uint8 (N, H, W, C) at the data's size (cubic when enlarging)."""
    images = ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    if images.shape[1:3] == (spec.height_px, spec.width_px):
        return images
    out = np.empty((len(images), spec.height_px, spec.width_px, spec.in_chans), dtype=np.uint8)
    grow = spec.height_px * spec.width_px > images.shape[1] * images.shape[2]
    for i, image in enumerate(images):
        resized = cv2.resize(image, (spec.width_px, spec.height_px),
                             interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)
        out[i] = resized.reshape(spec.height_px, spec.width_px, spec.in_chans)
    return out



def diffusion_target(noise_scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
    """What the network learns to predict for noise level t, by the scheduler's prediction type."""
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(x0, noise, t)
    return x0



def diffusion_batch(noise_scheduler: DDPMScheduler, x0: torch.Tensor, labels: torch.Tensor, null_class: int,
                    cond_drop_prob: float, generator: torch.Generator):
    """(noisy input, timesteps, conditioning labels, target) for one training batch; all randomness from
    `generator`, so an epoch is a pure function of its seed."""
    n = len(x0)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (n,), generator=generator, device=x0.device)
    drop = torch.rand(n, generator=generator, device=x0.device) < cond_drop_prob
    cond = torch.where(drop, torch.full_like(labels, null_class), labels)
    return noise_scheduler.add_noise(x0, noise, t), t, cond, diffusion_target(noise_scheduler, x0, noise, t)



def sample_seeds(seed: int, fold: int, count: int, start: int = 0) -> list[int]:
    """One seed per sample, so any single image can be regenerated from the manifest."""
    return [derived_seed(seed, fold, 7, i) for i in range(start, start + count)]



@torch.no_grad()
def sample(unet: UNet2DModel, sampler, labels: torch.Tensor, seeds: list[int], guidance_scale: float,
           null_class: int, rt: Runtime) -> torch.Tensor:
    """Denoise one batch; image i starts from noise seeded by seeds[i]. Returns (N, C, R, R) in [-1, 1]."""
    cfg = unet.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(rt.device)
    labels = labels.to(rt.device)
    guided = guidance_scale > 0
    class_in = torch.cat([labels, torch.full_like(labels, null_class)]) if guided else labels
    unet.eval()
    for t in sampler.timesteps:
        model_in = torch.cat([x, x]) if guided else x
        steps = torch.full((len(model_in),), int(t), device=rt.device)
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
            out = unet(model_in, steps, class_labels=class_in).sample.float()
        if guided:
            cond, uncond = out.chunk(2)
            out = cond + guidance_scale * (cond - uncond)
        x = sampler.step(out, t, x).prev_sample
    return x.clamp(-1, 1)



def sample_images(unet: UNet2DModel, noise_scheduler: DDPMScheduler, cfg: GenConfig, labels: np.ndarray,
                  seeds: list[int], spec: ImageSpec, rt: Runtime, quiet: bool = True) -> np.ndarray:
    """uint8 (N, H, W, C) samples at the data's size for the given class indices and seeds."""
    out = []
    null_class = unet.config.num_class_embeds - 1
    for start in tqdm(range(0, len(labels), cfg.sample_batch_size), desc="sample", unit="batch", leave=False,
                      disable=quiet):
        sampler = build_sampler(noise_scheduler, cfg.sampler, cfg.sample_steps)  # fresh: DPM-Solver keeps state
        stop = start + cfg.sample_batch_size
        x = sample(unet, sampler, torch.as_tensor(labels[start:stop]), seeds[start:stop], cfg.guidance_scale,
                   null_class, rt)
        out.append(from_model_range(x, spec))
    return np.concatenate(out)



def image_grid(images: np.ndarray, labels: np.ndarray, classes: list[str], per_row: int) -> np.ndarray:
    """One row per class (up to `per_row` images each), uint8 (H, W, C)."""
    h, w, c = images.shape[1:]
    grid = np.zeros((len(classes) * h, per_row * w, c), dtype=np.uint8)
    for row in range(len(classes)):
        for col, i in enumerate(np.flatnonzero(labels == row)[:per_row]):
            grid[row * h:(row + 1) * h, col * w:(col + 1) * w] = images[i]
    return grid



def save_grid(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str], title: str,
              per_row: int = 10) -> None:
    """Sample grid PNG, rows = classes, labelled with the class names."""
    import matplotlib.pyplot as plt

    grid = image_grid(images, labels, classes, per_row)
    h = images.shape[1]
    fig, ax = plt.subplots(figsize=(max(4.0, per_row * 0.45 + 1), max(3.0, len(classes) * 0.45 + 0.6)))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    ax.set_yticks([(r + 0.5) * h for r in range(len(classes))], [str(c)[:12] for c in classes])
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    save_figure(path, fig)
    plt.close(fig)
