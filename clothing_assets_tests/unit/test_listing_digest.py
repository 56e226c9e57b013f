"""A listing's digest is the stage's data version, and a synced catalog's too: it must not
depend on the time unit pandas inferred for LAST_MODIFIED, or a catalog read back from the
warehouse (microseconds) would never match its stage and every look would ask for a sync."""

from __future__ import annotations

import pandas as pd

from clothing_assets.stage import listing_digest


def _listing(unit: str) -> pd.DataFrame:
    times = pd.to_datetime(["2026-01-02 03:04:05.123456", "2026-01-02 03:04:06.000001"], utc=True)
    return pd.DataFrame(
        {
            "RELATIVE_PATH": ["hat/a.jpg", "shoes/b.jpg"],
            "SIZE": [10, 20],
            "LAST_MODIFIED": pd.Series(times).dt.as_unit(unit),
            "ETAG": [None, "e"],
        }
    )


def test_the_digest_is_the_same_in_nanoseconds_and_microseconds():
    assert listing_digest(_listing("ns")) == listing_digest(_listing("us"))


def test_the_digest_changes_with_a_file_and_not_with_the_row_order():
    listing = _listing("us")
    assert listing_digest(listing.iloc[::-1]) == listing_digest(listing)
    touched = listing.assign(SIZE=[10, 21])
    assert listing_digest(touched) != listing_digest(listing)
