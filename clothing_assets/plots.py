"""PNG figures for the Dagster UI: training curves and confusion matrices."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def training_curves_png(
    epochs: Sequence[int],
    train_loss: Sequence[float],
    val_loss: Sequence[float | None],
    train_acc: Sequence[float],
    val_acc: Sequence[float | None],
) -> bytes:
    """Loss and accuracy per epoch, train and validation, side by side."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(epochs, train_loss, "o-", label="train")
    if any(v is not None for v in val_loss):
        ax_loss.plot(epochs, [np.nan if v is None else v for v in val_loss], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.plot(epochs, train_acc, "o-", label="train")
    if any(v is not None for v in val_acc):
        ax_acc.plot(epochs, [np.nan if v is None else v for v in val_acc], "o-", label="val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return _png(fig)


def confusion_matrix(true: Sequence[int], predicted: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts[i, j]: images of class i predicted as class j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(true, dtype=int), np.asarray(predicted, dtype=int)), 1)
    return counts


def confusion_matrix_png(counts: np.ndarray, classes: Sequence[str], title: str) -> bytes:
    """A labelled heat map of a confusion matrix."""
    size = 1.0 + 0.55 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true (folder)", title=title)
    limit = counts.max() / 2 if counts.size else 0
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center",
                    color="white" if counts[i, j] > limit else "black", fontsize=8)  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def per_class_scores(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) per class from a confusion matrix; NaN where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tp = np.diag(counts).astype(float)
        precision = tp / counts.sum(axis=0)
        recall = tp / counts.sum(axis=1)
    return precision, recall


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown that shows the PNG inline in the Dagster UI."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def gallery_png(tiles: Sequence[tuple[object, str]], title: str, columns: int = 4) -> bytes:
    """A grid of (3xHxW uint8 tensor, caption) tiles."""
    rows = (len(tiles) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, caption) in zip(axes.flat, tiles, strict=False):
        ax.imshow(np.asarray(image).transpose(1, 2, 0))
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title)
    return _png(fig)


STATUS_COLOURS = {"champion": "#2e7d32", "challenger": "#1565c0", "rejected": "#c62828",
                  "retired": "#9e9e9e"}  # fmt: skip


def registry_chart_png(models) -> bytes:
    """Validation accuracy of every registered version, oldest first, coloured by status;
    the champion's accuracy on each challenger's rows as a black tick where it was compared."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(models) + 2), 3.2))
    positions = np.arange(len(models))
    accuracy = [np.nan if v is None else float(v) for v in models["VAL_ACCURACY"]]
    colours = [STATUS_COLOURS.get(s, "#555555") for s in models["STATUS"]]
    ax.bar(positions, np.nan_to_num(accuracy), color=colours)
    champion_on_rows = [np.nan if v is None else float(v) for v in models["CHAMPION_VAL_ACCURACY"]]
    ax.scatter(positions, champion_on_rows, marker="_", s=400, color="black",
               label="champion on the same rows")  # fmt: skip
    ax.set_xticks(positions, [f"{v[:8]}\n{s}" for v, s in zip(models["VERSION"],
                  models["STATUS"], strict=True)], fontsize=7)  # fmt: skip
    ax.set(ylabel="validation accuracy", ylim=(0, 1), title="Model registry")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def principal_plane(vectors: np.ndarray) -> np.ndarray:
    """Each row of `vectors` (n x d) as its coordinates on the first two principal components
    (n x 2, each axis's sign arbitrary); zeros for fewer than two rows or dimensions."""
    if len(vectors) < 2 or vectors.shape[1] < 2:
        return np.zeros((len(vectors), 2))
    centred = (vectors - vectors.mean(axis=0)).astype(np.float64)
    # the covariance's eigenvectors: a quarter of an SVD's time for 3,000 x 1,280
    _, eigenvectors = np.linalg.eigh(centred.T @ centred)
    return centred @ eigenvectors[:, ::-1][:, :2]  # eigh puts the largest last


def embedding_map_png(
    vectors: np.ndarray, labels: Sequence[str | None], stages: Sequence[str], title: str
) -> bytes:
    """The embeddings projected on their two principal components, a colour per label (the
    class folder of a train image, the prediction of a test image), train as dots and test as
    crosses: classes the model separates form separate clouds."""
    points = principal_plane(vectors)
    names = ["?" if label is None else str(label) for label in labels]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colours = plt.get_cmap("tab10")
    for i, name in enumerate(sorted(set(names))):
        for stage, marker in (("train", "o"), ("test", "x")):
            chosen = [j for j, (n, s) in enumerate(zip(names, stages, strict=True))
                      if n == name and s == stage]  # fmt: skip
            if chosen:
                ax.scatter(points[chosen, 0], points[chosen, 1], s=10, marker=marker,
                           color=colours(i % 10), label=f"{name} ({stage})", alpha=0.7)  # fmt: skip
    ax.set(xlabel="first principal component", ylabel="second", title=title)
    ax.legend(fontsize="x-small", ncol=2, loc="best")
    return _png(fig)
