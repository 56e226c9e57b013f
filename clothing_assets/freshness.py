"""Freshness policies: how old an asset's latest materialization may get before the UI shows
it failing. Both windows come from `settings`, read when the code location loads."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from clothing_assets.settings import setting

# asset -> the variable holding its window in hours
WINDOW_VARIABLES = {
    "trained_model": "CLOTHING_MODEL_MAX_AGE_HOURS",
    "clothing_predictions": "CLOTHING_PREDICTIONS_MAX_LAG_HOURS",
}


def freshness_windows() -> dict[str, timedelta]:
    """The window of each asset that has a freshness policy, from its variable."""
    return {asset: timedelta(hours=setting(name)) for asset, name in WINDOW_VARIABLES.items()}


def window_label(window: timedelta) -> str:
    """`window` as a tag value, largest units first: `8d`, `1d` (24 h), `1h30m`."""
    minutes = round(window.total_seconds() / 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return "".join(parts) or "0m"


def with_freshness(spec: dg.AssetSpec, window: timedelta) -> dg.AssetSpec:
    """`spec` with a time-window policy (FAIL once the latest materialization is older than
    `window`), and the window as the tag `freshness_fail_after`: `dg list defs` has no
    freshness column, and the UI can filter assets by tag."""
    policy = dg.FreshnessPolicy.time_window(fail_window=window)
    return spec.replace_attributes(freshness_policy=policy).merge_attributes(
        tags={"freshness_fail_after": window_label(window)}
    )
