"""The model registry: versions in the model store, their status in the warehouse.

A training run stores its model once under its version and registers it as a `challenger`.
`decide` promotes the newest challenger to `champion` only when its validation accuracy passes
`min_val_accuracy` and it is no worse than the champion by more than `promotion_margin` on the
same rows (the challenger's validation split); otherwise it is `rejected` with the reason. A
person may `promote` any stored version that has a recorded accuracy (the not-worse rule is
skipped: a human decided); one that was rejected or is below `min_val_accuracy` needs `force`,
and the override is recorded in its reason. A model without a recorded accuracy is never
promoted. Scoring uses the champion. Retention deletes stored files beyond the last
`keep_models` versions, never the champion's nor one that a clothing_test row names.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from clothing_assets.resources.model_store import ModelStoreError, ModelStoreResource
from clothing_assets.resources.warehouse import ModelRecord, Warehouse


class RegistryError(dg.Failure):
    """A registry request that cannot be carried out; the description says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(description=message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Decision:
    """What the promotion rule made of one challenger."""

    version: str
    promoted: bool
    reason: str
    champion_before: str | None
    champion_after: str | None


def _accuracy(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def promotion_rule(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    *,
    min_val_accuracy: float,
    margin: float,
) -> tuple[bool, str]:
    """(promote?, one-line reason) for `challenger` against `champion` (registry rows)."""
    accuracy = _accuracy(challenger["VAL_ACCURACY"])
    if accuracy is None:
        return False, "no validation accuracy (trained with val_fraction 0): never promoted"
    if accuracy < min_val_accuracy:
        return False, (
            f"validation accuracy {accuracy:.3f} is below CLOTHING_MIN_VAL_ACCURACY "
            f"{min_val_accuracy:g}"
        )
    if champion is None:
        return True, f"first champion: validation accuracy {accuracy:.3f} passes the gate"
    if challenger["COMPARED_WITH"] != champion["VERSION"]:
        return False, (
            f"compared with {challenger['COMPARED_WITH'] or 'no champion'} when trained, but "
            f"the champion is now {champion['VERSION']}: retrain to compare on the same rows"
        )
    theirs = _accuracy(challenger["CHAMPION_VAL_ACCURACY"])
    rows = int(challenger["VAL_ROWS"])
    if theirs is None:
        return False, f"champion {champion['VERSION']} could not be evaluated on the same rows"
    if accuracy < theirs - margin:
        return False, (
            f"{accuracy:.3f} on its {rows} validation rows, worse than champion "
            f"{champion['VERSION']}'s {theirs:.3f} on the same rows by more than "
            f"CLOTHING_PROMOTION_MARGIN {margin:g}"
        )
    return True, (
        f"{accuracy:.3f} vs champion {champion['VERSION']}'s {theirs:.3f} on the same "
        f"{rows} validation rows"
    )


class ModelRegistry(dg.ConfigurableResource):
    """Registers, promotes, loads and retires model versions (see the module docstring)."""

    warehouse: Warehouse
    store: ModelStoreResource
    min_val_accuracy: float = Field(
        default=0.5,
        description="Promotion gate on validation accuracy (CLOTHING_MIN_VAL_ACCURACY).",
    )
    promotion_margin: float = Field(
        default=0.01,
        description="How much worse than the champion on the same rows a challenger may be "
        "(CLOTHING_PROMOTION_MARGIN).",
    )
    keep_models: int = Field(
        default=5,
        description="Stored versions kept besides referenced ones (CLOTHING_KEEP_MODELS).",
    )

    def register(self, data: bytes, record: dict[str, Any], *, run_id: str | None) -> str:
        """Store a trained model's bytes and register it as a challenger; return its version.

        `record` holds ModelRecord's fields other than version, sha256 and uri.
        """
        version = self.store.put(data)
        full = ModelRecord(
            version=version,
            sha256=hashlib.sha256(data).hexdigest(),
            uri=self.store.uri(version),
            **record,
        )
        self.warehouse.register_model(full, run_id=run_id)
        return version

    def champion(self) -> dict[str, Any] | None:
        return self.warehouse.champion()

    def load(self, version: str) -> bytes:
        """The verified bytes of a registered version."""
        row = self.warehouse.model(version)
        if row is None:
            raise RegistryError(
                f"unknown model version {version!r}: see `clothing-assets models list`"
            )
        try:
            return self.store.get(version, row["SHA256"])
        except ModelStoreError as exc:
            raise RegistryError(str(exc)) from exc

    def load_champion(self) -> tuple[dict[str, Any], bytes]:
        champion = self.champion()
        if champion is None:
            raise RegistryError(
                "there is no champion model yet: materialize trained_model and champion_model "
                "(a challenger that passes the gate becomes the champion), or promote a "
                "version with `clothing-assets models promote VERSION`"
            )
        return champion, self.load(champion["VERSION"])

    def decide(self, *, run_id: str | None = None) -> Decision | None:
        """Apply the promotion rule to the newest challenger (older pending ones are rejected
        as superseded); None when no challenger waits."""
        models = self.warehouse.read_models()
        pending = models[models["STATUS"] == "challenger"]
        if pending.empty:
            return None
        newest = pending.iloc[-1].to_dict()
        for version in pending["VERSION"].iloc[:-1]:
            self.warehouse.change_model_status(
                version, "rejected", f"superseded by the newer challenger {newest['VERSION']}",
                run_id=run_id,
            )  # fmt: skip
        champion = self.champion()
        promote, reason = promotion_rule(
            newest, champion, min_val_accuracy=self.min_val_accuracy, margin=self.promotion_margin
        )
        status = "champion" if promote else "rejected"
        self.warehouse.change_model_status(newest["VERSION"], status, reason, run_id=run_id)
        before = champion["VERSION"] if champion else None
        return Decision(
            newest["VERSION"], promote, reason, before, newest["VERSION"] if promote else before
        )

    def objection(self, row: dict[str, Any]) -> str | None:
        """Why promoting the registry row `row` by hand needs `force`: it was rejected, or its
        validation accuracy is below the gate; None when nothing stands against it."""
        accuracy = _accuracy(row["VAL_ACCURACY"])
        if row["STATUS"] == "rejected":
            return f"was rejected ({row['REASON']})"
        if accuracy is not None and accuracy < self.min_val_accuracy:
            return (
                f"has validation accuracy {accuracy:.3f}, below CLOTHING_MIN_VAL_ACCURACY "
                f"{self.min_val_accuracy:g}"
            )
        return None

    def promotable(self, version: str, *, force: bool = False) -> str | None:
        """Check that a person may promote `version` (see `promote`) without changing
        anything; return the objection that `force` overrides, if any."""
        row = self.warehouse.model(version)
        listing = "see `clothing-assets models list`"
        if row is None:
            raise RegistryError(f"unknown model version {version!r}: {listing}")
        if not pd.isna(row["DELETED_AT"]):
            raise RegistryError(f"model {version} was deleted by retention: {listing}")
        if _accuracy(row["VAL_ACCURACY"]) is None:
            raise RegistryError(
                f"model {version} has no recorded validation accuracy (trained with "
                "val_fraction 0) and is never promoted"
            )
        objection = None if row["STATUS"] == "champion" else self.objection(row)
        if objection and not force:
            raise RegistryError(
                f"model {version} {objection}: promoting it needs intent, add --force "
                "(`force: true` in champion_model's run config) to override the gate"
            )
        self.load(version)  # refuses a missing or tampered file before anything changes
        return objection

    def promote(
        self, version: str, reason: str = "", *, force: bool = False, run_id: str | None = None
    ) -> Decision:
        """Make a stored version with a recorded accuracy the champion, by a person's choice.
        A version the gate rejected, or one below it, needs `force`; the override is recorded
        in the reason."""
        objection = self.promotable(version, force=force)
        champion = self.champion()
        before = champion["VERSION"] if champion else None
        why = "promoted by hand"
        if objection:
            why += f", forced although it {objection}"
        if reason:
            why += f": {reason}"
        if before != version:
            self.warehouse.change_model_status(version, "champion", why, run_id=run_id)
        return Decision(version, True, why, before, version)

    def apply_retention(self, *, run_id: str | None = None) -> list[str]:
        """Delete stored files beyond the newest `keep_models` versions, except the champion's
        and any that a clothing_test row names; return the versions deleted."""
        models = self.warehouse.read_models()
        stored = models[models["DELETED_AT"].isna()]
        keep = set(stored["VERSION"].iloc[-self.keep_models :]) if self.keep_models else set()
        keep |= set(stored.loc[stored["STATUS"] == "champion", "VERSION"])
        keep |= set(stored.loc[stored["ROWS_SCORED"] > 0, "VERSION"])
        deleted = []
        for version in stored["VERSION"]:
            if version in keep:
                continue
            self.store.delete(version)
            self.warehouse.mark_model_deleted(
                version, f"file deleted by retention (CLOTHING_KEEP_MODELS={self.keep_models})",
                run_id=run_id,
            )  # fmt: skip
            deleted.append(version)
        return deleted
