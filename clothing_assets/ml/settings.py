"""Training hyperparameters: one settings object, read by `fit` and by the asset's config.

Kept free of torch, so that loading the code location does not import it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of a training run; `TrainConfig` (the asset's `dg.Config`) is built
    from these fields and defaults."""

    architecture: str = "resnet18"
    image_size: int = 128
    n_epochs: int = 20
    # wall-clock minutes for `fit` (the epochs that fit, measured, at most n_epochs); 0: none.
    # 10 leaves the default main job a few minutes for its other steps within 15 on 2 cores.
    max_train_minutes: float = 10.0
    batch_size: int = 64
    base_lr: float = 0.003
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    downsample_to: float = 1.0
    val_fraction: float = 0.1
    checkpoint_every: int = 50
    seed: int = 0
    weights: str = "none"
    device: str = "auto"
    bf16: str = "auto"
    compile: bool = False
    ema_decay: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
