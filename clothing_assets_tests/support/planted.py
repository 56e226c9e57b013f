"""A planted stage for the review's quality: synthetic garment-like photos whose class shows in
their shape, with planted copies (resized to half, recompressed at JPEG quality 40, cropped by
10 %, re-encoded, and byte-exact) and planted mislabels; and their embeddings from the
installed ImageNet weights of EfficientNet-Lite0, computed the way scoring computes them."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PLANTED_CLASSES = ("hat", "pants", "shoes", "skirt", "dress")
# each class's garment colour (jittered per image), so that its class shows to a model that
# was never trained on garments: ImageNet features weigh colour and texture over outline
GARMENT_COLOURS = {"hat": (230, 30, 30), "pants": (30, 200, 40), "shoes": (30, 50, 230),
                   "skirt": (240, 220, 20), "dress": (200, 40, 220)}  # fmt: skip
COPY_KINDS = ("half", "jpeg40", "crop10", "reencoded", "exact")


def _shape(draw: ImageDraw.ImageDraw, name: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if name == "hat":
        draw.ellipse((x0, y0 + h // 3, x1, y1), fill=fill)
        draw.rectangle((x0 + w // 4, y0, x1 - w // 4, y0 + 2 * h // 3), fill=fill)
    elif name == "pants":
        draw.rectangle((x0, y0, x1, y0 + h // 4), fill=fill)
        draw.rectangle((x0, y0, x0 + w // 3, y1), fill=fill)
        draw.rectangle((x1 - w // 3, y0, x1, y1), fill=fill)
    elif name == "shoes":
        draw.rectangle((x0, y0 + h // 2, x1, y1), fill=fill)
        draw.rectangle((x0, y0, x0 + w // 3, y1), fill=fill)
    elif name == "skirt":
        draw.polygon([(x0 + w // 3, y0), (x1 - w // 3, y0), (x1, y1), (x0, y1)], fill=fill)
    else:  # dress
        draw.polygon([(x0 + w // 2, y0), (x1, y1), (x0, y1)], fill=fill)
        draw.rectangle((x0 + w // 3, y0, x1 - w // 3, y0 + h // 2), fill=fill)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A random colour field with stripes of random frequency, angle and colours."""
    grid = int(rng.integers(2, 8))
    field = Image.fromarray(rng.integers(0, 256, (grid, grid, 3)).astype(np.uint8))
    field = np.asarray(field.resize((size, size), Image.BICUBIC), dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle, frequency = rng.uniform(0, np.pi), rng.uniform(2, 14)
    stripes = np.sin(2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)))
    tint = rng.uniform(-60, 60, 3)
    pixels = field + stripes[..., None] * tint + rng.normal(0, 10, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def garment_jpeg(name: str, seed: int, size: int = 320, *, class_colour: bool = True) -> bytes:
    """A JPEG photo-like image: a random striped background, random clutter, and the class's
    garment silhouette at a random place and size, in its class's colour (jittered) or, with
    `class_colour` False, in a random one."""
    rng = np.random.default_rng(seed)
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):  # clutter: discs and bars of random colours
        x, y = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(size // 30, size // 8))
        box = (x - r, y - r, x + r, y + r // 2)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=_colour(rng))
    side = int(rng.integers(size * 6 // 10, size - size // 10))
    x0, y0 = (int(v) for v in rng.integers(2, size - side - 2, 2))
    base = np.array(GARMENT_COLOURS[name] if class_colour else _colour(rng))
    colour = np.clip(base + rng.integers(-25, 26, 3), 0, 255)
    _shape(draw, name, (x0, y0, x0 + side, y0 + side), tuple(int(v) for v in colour))
    return _jpeg(image.filter(ImageFilter.GaussianBlur(1.0)), 92)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def copy_of(data: bytes, kind: str) -> bytes:
    """A planted copy of the JPEG `data`: one of COPY_KINDS."""
    if kind == "exact":
        return data
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    if kind == "half":
        return _jpeg(image.resize((w // 2, h // 2), Image.BICUBIC), 90)
    if kind == "jpeg40":
        return _jpeg(image, 40)
    if kind == "crop10":  # 10 % of each side's length, split over both edges
        return _jpeg(image.crop((w // 20, h // 20, w - w // 20, h - h // 20)), 90)
    buffer = io.BytesIO()  # reencoded: the same pixels as a PNG
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class PlantedStage:
    """Files by stage ('train'/'test') and path, with what was planted."""

    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    # frozenset of the (stage, path) of an original and one of its copies
    copy_pairs: set[frozenset] = field(default_factory=set)
    groups: list[set[tuple[str, str]]] = field(default_factory=list)
    # train path -> its true class, for the images moved to a wrong class folder
    mislabels: dict[str, str] = field(default_factory=dict)


def planted_stage(
    per_class: int,
    *,
    originals_copied: int,
    mislabel_share: float = 0.05,
    test_per_class: int | None = None,
    class_colour: bool = True,
    seed: int = 0,
) -> PlantedStage:
    """`per_class` train images per class and `test_per_class` (default half as many) test
    images; the first `originals_copied` train images each get one copy of every COPY_KINDS,
    alternately in the train and the test stage; then `mislabel_share` of the train originals
    (none of them copied) are moved to the next class's folder."""
    stage = PlantedStage()
    rng = np.random.default_rng(seed)
    originals = []
    tests = per_class // 2 if test_per_class is None else test_per_class
    for c, name in enumerate(PLANTED_CLASSES):
        for i in range(per_class + tests):
            where, prefix = ("train", "") if i < per_class else ("test", "t_")
            path = f"{name}/{prefix}{name}_{i:03d}.jpg"
            stage.files[(where, path)] = garment_jpeg(
                name, seed * 100_000 + c * 1000 + i, class_colour=class_colour
            )
            if where == "train":
                originals.append(path)
    order = rng.permutation(len(originals))
    copied = [originals[i] for i in order[:originals_copied]]
    for n, path in enumerate(copied):
        group = {("train", path)}
        for kind in COPY_KINDS:
            where = "test" if (n + COPY_KINDS.index(kind)) % 2 else "train"
            extension = "png" if kind == "reencoded" else "jpg"
            copy_path = f"{path.rsplit('.', 1)[0]}_{kind}.{extension}"
            stage.files[(where, copy_path)] = copy_of(stage.files[("train", path)], kind)
            stage.copy_pairs.add(frozenset({("train", path), (where, copy_path)}))
            group.add((where, copy_path))
        stage.groups.append(group)
    candidates = [originals[i] for i in order[originals_copied:]]
    for path in candidates[: int(round(mislabel_share * len(originals)))]:
        true = path.split("/")[0]
        wrong = PLANTED_CLASSES[(PLANTED_CLASSES.index(true) + 1) % len(PLANTED_CLASSES)]
        moved = f"{wrong}/{path.split('/')[1]}"
        stage.files[("train", moved)] = stage.files.pop(("train", path))
        stage.mislabels[moved] = true
    return stage


def lite0_embedder(image_size: int = 64):
    """`embed(list of file bytes) -> [n, d] float32` with EfficientNet-Lite0's installed
    ImageNet weights, through the model file's decode side and eval preset, as scoring does."""
    embed_and_hash = lite0_embed_and_hash(image_size)
    return lambda datas: embed_and_hash(datas)[0]


def lite0_embed_and_hash(image_size: int = 64):
    """`embed(list of file bytes) -> ([n, d] float32, whole hashes, centre hashes)`: the
    embeddings of `lite0_embedder` and, from the same decode, the perceptual hashes
    (`ml.phash.image_hashes`), as scoring makes them."""
    import torch

    from clothing_assets.ml.embeddings import embed_batch
    from clothing_assets.ml.images import prepare
    from clothing_assets.ml.model_file import ModelFile
    from clothing_assets.ml.models import build_model
    from clothing_assets.ml.phash import image_hashes
    from clothing_assets.ml.settings import TrainSettings

    settings = TrainSettings(image_size=image_size)
    model = build_model("efficientnet_lite0", len(PLANTED_CLASSES), weights="imagenet",
                        image_size=image_size)  # fmt: skip
    model_file = ModelFile.of_training(model.state_dict(), list(PLANTED_CLASSES), settings,
                                       val_accuracy=None)  # fmt: skip
    model = model_file.build().eval()
    preset = model_file.eval_preset()
    side = model_file.cache_size

    def embed(datas: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out, whole, centre = [], [], []
        for start in range(0, len(datas), 64):
            batch = torch.stack([prepare(d, side) for d in datas[start : start + 64]])
            out.append(embed_batch(model, preset(batch)))
            hashes = image_hashes(batch)
            whole.append(hashes[0])
            centre.append(hashes[1])
        return np.concatenate(out), np.concatenate(whole), np.concatenate(centre)

    return embed


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
