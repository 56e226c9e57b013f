"""Training hyperparameters: one settings object, read by `fit` and by the asset's config.

Each field's default and description are stated here once; `TrainConfig`, the asset's
`dg.Config`, is generated from these fields. Kept free of torch (and of Dagster), so that
loading the code location imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _setting(default: Any, doc: str = "") -> Any:
    return field(default=default, metadata={"doc": doc})


# `crop_scale_min` 0: the smallest crop by the timed steps' plan (measured on resnet18 from
# random initialisation)
SHORT_PLAN_EPOCHS = 20
SHORT_PLAN_CROP_SCALE = 0.5
LONG_PLAN_CROP_SCALE = 0.25


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of a training run. The defaults fine-tune EfficientNet-Lite0 from its
    ImageNet weights (installed with the project: no download) at 128 px, its stem and first 5
    blocks frozen, for as many epochs (at most 100) as fit in 4.5 minutes, so the main job ends
    within 6 on a 2-core CPU; `configs/resnet50_gpu.yaml` is the 25-epoch ResNet50 recipe for
    GPU machines."""

    architecture: str = _setting(
        "efficientnet_lite0",
        "efficientnet_lite0 (EfficientNet-Lite0), or any torchvision classification model name.",
    )
    # 128: on one exploratory split 160 px scored no better in 1.6x the time (BENCHMARKS.md,
    # Recipes)
    image_size: int = _setting(128, "Training crop side (px).")
    n_epochs: int = _setting(100, "At most this many epochs (the budget usually decides).")
    # 4.5: the main job then ends within 6 minutes on the AMX Xeon (with 5: 6 min 5 s); with 5
    # blocks frozen that fits about 19,000 images' steps on 2 cores, which scored 92.3±0.8 % on
    # unseen images over three splits (24,000: 92.5±0.3, level with 19 unfrozen epochs in 12
    # minutes; BENCHMARKS.md, Recipes and Main job)
    max_train_minutes: float = _setting(
        4.5,
        "Wall-clock budget of training: the epochs that fit, from the throughput timed over "
        "the first steps (at most n_epochs); 0: no budget, n_epochs.",
    )
    # 32: EfficientNet-Lite0's fp32 step at 128 px ran 1.3-1.5x faster per image at batch 32
    # than at 64 on both CPU kinds (bench/fp32_step.py, BENCHMARKS.md, Training step)
    batch_size: int = _setting(32)
    optimizer: str = _setting(
        "adamw", "'adamw' or 'sgd' (Nesterov momentum 0.9; weight decay as L2)."
    )
    # 0.001: fine-tuning pretrained weights; 0.003 suited training from random initialisation
    base_lr: float = _setting(0.001, "Peak learning rate.")
    weight_decay: float = _setting(0.05)
    label_smoothing: float = _setting(0.1)
    # 0.25 for the default fine-tuning (BENCHMARKS.md, Recipes); 0, "by the plan", is the rule
    # measured for resnet18 from scratch: at 18 epochs 0.5 beat 0.25 by 3.5 and 5.4 points on
    # unseen images (two splits, a real AVX2 EPYC), at 68 it lost 2.4 (one split, AMX-BF16)
    crop_scale_min: float = _setting(
        LONG_PLAN_CROP_SCALE,
        "Random-resized-crop: the smallest crop, as a fraction of the image's area; 0: by the "
        f"plan, {SHORT_PLAN_CROP_SCALE} when the timed steps planned at most "
        f"{SHORT_PLAN_EPOCHS} epochs, else {LONG_PLAN_CROP_SCALE}.",
    )
    # 5: the stem and the blocks at 64-16 px (up to 40 channels) keep their pretrained weights,
    # so backpropagation stops above them (BENCHMARKS.md, Recipes)
    frozen_blocks: int = _setting(
        5,
        "Keep the stem and the first N blocks of a pretrained network at their starting "
        "weights (ImageNet's or the champion's): a faster step; 0: train every layer. A network "
        "trained from random initialisation (weights: none) trains every layer.",
    )
    warmup_epochs: float = _setting(1.0)
    downsample_to: float = _setting(1.0, "Fraction of the training data used.")
    val_fraction: float = _setting(0.1, "Stratified validation split of the catalog.")
    checkpoint_every: int = _setting(
        200,
        "Checkpoint every N iterations, and at an epoch end when N or more passed since the "
        "last one (0: at every epoch end only).",
    )
    seed: int = _setting(0)
    weights: str = _setting(
        "imagenet",
        "'imagenet': start from ImageNet weights (efficientnet_lite0's come installed with the "
        "project; a torchvision model downloads its own once, which needs the internet), or "
        "'none': random initialisation.",
    )
    device: str = _setting("auto", "'auto', 'cpu' or 'cuda'.")
    bf16: str = _setting("auto", "'auto', 'on' or 'off'.")
    compile: bool = _setting(
        False,
        "torch.compile the training forward pass (worth it on GPUs; minutes of compilation first).",
    )
    ema_decay: float = _setting(
        0.0,
        "Keep and validate an exponential moving average of the weights with this per-step "
        "decay (e.g. 0.998); 0: off.",
    )
    eval_flip: bool = _setting(
        True,
        "Score and serve each image as the mean of its own and its mirror image's softmax "
        "(two forward passes per image); validation during training uses one view.",
    )
    mixup_alpha: float = _setting(0.0, "MixUp Beta(a, a); 0: off.")
    cutmix_alpha: float = _setting(0.0, "CutMix Beta(a, a); 0: off.")

    def crop_scale_for(self, planned_epochs: int) -> float:
        """The smallest random-resized crop for a run of `planned_epochs`: `crop_scale_min`,
        or when that is 0, SHORT_PLAN_CROP_SCALE for plans of at most SHORT_PLAN_EPOCHS
        epochs and LONG_PLAN_CROP_SCALE for longer ones."""
        if self.crop_scale_min > 0:
            return self.crop_scale_min
        if planned_epochs <= SHORT_PLAN_EPOCHS:
            return SHORT_PLAN_CROP_SCALE
        return LONG_PLAN_CROP_SCALE
