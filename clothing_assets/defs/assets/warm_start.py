"""Where `trained_model` starts: the champion's weights (`init: champion`), ImageNet's, or
random ones.

Fine-tuning from the champion is allowed only when it was trained for exactly the catalog's
classes and with the same architecture: its output layer would otherwise mean other classes,
and a run that silently started from ImageNet instead would take a from-scratch run's time
while the schedule that asked for a warm start expects a short one. So a champion with other
classes is refused with the classes that differ named; a run with no champion yet starts as
`weights` says and records that it did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg

from clothing_assets.resources.model_registry import ModelRegistry, RegistryError

if TYPE_CHECKING:
    import torch

INITS = ("champion", "imagenet", "none")


class WarmStartRefused(ValueError):
    """`init: champion` cannot start from this champion; the message says why and what to do."""


@dataclass(frozen=True)
class Start:
    """What a training run starts from: `init` (champion, imagenet or none), the champion
    `version` whose weights it starts from (None otherwise), those weights, and a note when
    the run could not start as asked."""

    init: str
    version: str | None = None
    state_dict: Mapping[str, torch.Tensor] | None = field(default=None, repr=False)
    note: str = ""

    def metadata(self, asked: str) -> dict[str, Any]:
        """The materialization's record of the start: asked, done, from which version."""
        return {
            "init": dg.MetadataValue.text(self.init),
            "init_asked": dg.MetadataValue.text(asked),
            "init_version": dg.MetadataValue.text(self.version or "none"),
            **({"init_note": dg.MetadataValue.text(self.note)} if self.note else {}),
        }


def resolve_init(init: str, weights: str, *, init_given: bool, weights_given: bool) -> str:
    """The run's `init`: as given; when only `weights` is given, `weights` (its older spelling
    for imagenet or none). A given `init` of imagenet or none that contradicts a given
    `weights` is refused: one of the two would be silently ignored."""
    if init not in INITS:
        raise WarmStartRefused(f"init must be one of {', '.join(INITS)}, not {init!r}")
    if not init_given:
        return weights if weights_given else init
    if init != "champion" and weights_given and weights != init:
        raise WarmStartRefused(
            f"init: {init} and weights: {weights} disagree; set init alone (champion, "
            "imagenet or none)"
        )
    return init


def champion_start(
    registry: ModelRegistry,
    classes: Sequence[str],
    architecture: str,
    fallback: str,
    *,
    strict: bool = True,
) -> Start:
    """The start of an `init: champion` run over `classes`: the champion's weights, or
    `fallback` (the run's `weights`) with a note when there is no champion yet.

    WarmStartRefused when the champion's classes or architecture differ from the run's, or
    its file cannot be read; without `strict` (a scheduled retrain no one configured), the
    `fallback` start instead, with the reason as its note."""
    champion = registry.champion()
    if champion is None:
        return Start(fallback, note=f"init: champion, but there is no champion yet: started "
                     f"from {fallback} weights")  # fmt: skip
    version = champion["VERSION"]
    try:
        model_file = _champion_file(registry, version)
        _check_same_task(version, model_file, classes, architecture)
    except WarmStartRefused as exc:
        if strict:
            raise
        return Start(fallback, note=f"started from {fallback} weights, not the champion's: {exc}")
    return Start("champion", version, dict(model_file.state_dict))


def _champion_file(registry: ModelRegistry, version: str) -> Any:
    """Champion `version`'s `ModelFile`; WarmStartRefused when it cannot be read."""
    from clothing_assets.ml.model_file import ModelFile

    try:
        return ModelFile.load(registry.load(version))  # torch.load weights_only=True
    except (RegistryError, ValueError) as exc:
        raise WarmStartRefused(
            f"init: champion cannot read champion {version}'s file: {exc}; promote a readable "
            "version or train with init: imagenet"
        ) from exc


def _check_same_task(
    version: str, model_file: Any, classes: Sequence[str], architecture: str
) -> None:
    """WarmStartRefused unless champion `version` has exactly `classes` and `architecture`."""
    theirs, ours = list(model_file.classes), sorted(classes)
    if theirs != ours:
        added = sorted(set(ours) - set(theirs))
        gone = sorted(set(theirs) - set(ours))
        raise WarmStartRefused(
            f"init: champion refused: champion {version} was trained for other classes "
            f"(new in the catalog: {', '.join(added) or 'none'}; no longer in the catalog: "
            f"{', '.join(gone) or 'none'}); its output layer would mean other classes. Train "
            "this run with init: imagenet"
        )
    if model_file.architecture != architecture:
        raise WarmStartRefused(
            f"init: champion refused: champion {version} is a {model_file.architecture}, this "
            f"run trains a {architecture}; set architecture: {model_file.architecture} or "
            "init: imagenet"
        )
