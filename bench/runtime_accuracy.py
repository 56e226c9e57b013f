"""Test-stage accuracy of one trained model file under each scoring runtime, side by side.

Scores every test-stage image through `scoring.classify` (the batch scorer's and the model
server's path): torch in fp32, torch with bf16 autocast where this CPU runs it natively (as the
scorer does there), and the int8 ONNX Runtime model made by `int8_model_bytes`, calibrated
on 100 train-stage images chosen as `clothing_predictions` chooses them (every n-th of the
sorted paths). Prints accuracy per runtime, the difference from fp32, the share of labels that
agree with fp32 and the largest confidence difference.

    python -m bench.runtime_accuracy --model models/versions/<version>.pt
"""

from pathlib import Path

import torch

from bench.common import REPO, jpegs, parse, parser, tagged, timed
from clothing_assets.ml.devices import amp_dtype_for
from clothing_assets.ml.images import prepare
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.runtime import int8_model_bytes, load_int8_model
from clothing_assets.ml.scoring import classify


def _newest_model() -> Path | None:
    files = sorted((REPO / "models" / "versions").glob("*.pt"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def _probabilities(model, model_file, images, amp_dtype, batch_size: int = 64) -> torch.Tensor:
    device = torch.device("cpu")
    return torch.cat([classify(model, model_file, images[i : i + batch_size], device, amp_dtype)
                      for i in range(0, len(images), batch_size)])  # fmt: skip


def main() -> None:
    described = parser(__doc__)
    described.add_argument(
        "--model", type=Path, default=_newest_model(),
        help="a model file (default: the newest under models/versions/)",
    )  # fmt: skip
    args = parse(described)
    if args.model is None or not args.model.is_file():
        raise SystemExit("no model file: train one (make run) or give --model <file>")
    data = args.model.read_bytes()
    model_file = ModelFile.load(data)
    model = model_file.build().to(memory_format=torch.channels_last).eval()

    test = jpegs(args.data / "test")
    truth = torch.tensor([model_file.classes.index(p.parent.name) for p in test])
    images = [prepare(p.read_bytes(), model_file.cache_size) for p in test]
    train = jpegs(args.data / "train")
    calibration = [p.read_bytes() for p in train[:: max(1, len(train) // 100)][:100]]
    (int8_model, int8_file), seconds = timed(
        lambda: load_int8_model(int8_model_bytes(data, calibration))
    )
    print(tagged(f"int8 model made in {seconds:.1f}s from "
                 f"{len(calibration)} calibration images"), flush=True)  # fmt: skip

    runs = {"torch fp32": (model, model_file, None),
            "onnxruntime-int8": (int8_model, int8_file, None)}  # fmt: skip
    native = amp_dtype_for(torch.device("cpu"))
    if native is not None:  # the scorer's own autocast path; on fp32 CPUs it is the fp32 run
        runs[f"torch ({str(native).removeprefix('torch.')})"] = (model, model_file, native)
    probs = {name: _probabilities(m, p, images, amp) for name, (m, p, amp) in runs.items()}
    fp32 = probs["torch fp32"]
    acc_fp32 = float((fp32.argmax(1) == truth).float().mean())
    lines = []
    for name, p in probs.items():
        acc = float((p.argmax(1) == truth).float().mean())
        agree = float((p.argmax(1) == fp32.argmax(1)).float().mean())
        dconf = float((p.max(1).values - fp32.max(1).values).abs().max())
        lines.append(f"{name} {100 * acc:.1f} % ({100 * (acc - acc_fp32):+.1f} vs fp32, "
                     f"agreement {agree:.3f}, max |dconf| {dconf:.3f})")  # fmt: skip
    print(
        tagged(
            f"runtime_accuracy: {args.model.name}, {len(test)} test images, "
            f"{model_file.architecture} {model_file.image_size}px: " + "; ".join(lines)
        )
    )


if __name__ == "__main__":
    main()
