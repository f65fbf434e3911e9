"""Image augmentation of training batches through ``torchvision.transforms.v2`` (``[train.augment]``).

Each sample of a batch gets its own random parameters, applied alike to all its history steps and
camera views (the frames of one moment stay consistent with each other and over time). The randomness
comes from the run's per-rank sample generator: one seed per batch is drawn from it and the transforms
run under that seed in a forked torch RNG, so a resumed run augments exactly as the uninterrupted one
and nothing else's random stream moves. Only training batches pass through here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from hpt_kit.core.recipe import AugmentSection


class ImageAugment:
    """Callable on a batch's uint8 ``image`` (B, H, V, h, w, 3) with the run's generator."""

    def __init__(self, section: AugmentSection):
        self.section = section
        self._transforms: dict[tuple[int, int], Callable[[torch.Tensor], torch.Tensor]] = {}

    def _transform(self, height: int, width: int) -> Callable[[torch.Tensor], torch.Tensor]:
        if (height, width) not in self._transforms:
            try:
                from torchvision.transforms import v2
            except ImportError:
                raise ImportError("[train.augment] needs torchvision: pip install 'hpt-kit[vision]'") from None

            s: AugmentSection = self.section
            steps: list[Callable] = []
            if s.crop_scale < 1:
                steps.append(v2.RandomResizedCrop((height, width), scale=(s.crop_scale, 1.0), ratio=(1.0, 1.0), antialias=True))
            if s.rotation > 0:
                steps.append(v2.RandomRotation(s.rotation))
            if max(s.brightness, s.contrast, s.saturation, s.hue) > 0:
                steps.append(v2.ColorJitter(s.brightness, s.contrast, s.saturation, s.hue))
            self._transforms[(height, width)] = v2.Compose(steps)
        return self._transforms[(height, width)]

    def __call__(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        B, H, V, h, w, C = images.shape
        transform = self._transform(h, w)
        seed = int(rng.integers(2**63 - 1))
        with torch.random.fork_rng(devices=[]):  # transforms draw their parameters on the CPU
            torch.manual_seed(seed)
            out = [transform(sample.reshape(H * V, h, w, C).permute(0, 3, 1, 2)) for sample in images]  # (H*V, C, h, w)
        return torch.stack(out).permute(0, 1, 3, 4, 2).reshape(B, H, V, h, w, C)


def build_augment(section: AugmentSection) -> ImageAugment | None:
    return ImageAugment(section) if section.enabled else None
