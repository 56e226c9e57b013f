"""Stages: where the images live. Listing (`listing`), safe reads (`reading`), the resource."""

from clothing_assets.stage.listing import (
    LISTING_COLUMNS,
    StageLocationError,
    catalog_matches,
    class_of,
    list_stage,
    listing_digest,
    open_location,
    redact_url,
    unsafe_reason,
)
from clothing_assets.stage.reading import (
    HTTP_ATTEMPTS,
    REFUSED_READ,
    URL_REFUSED,
    FileTooLargeError,
    ReadLimits,
    UnsafePathError,
    URLRefusedError,
    read_bytes,
    stage_file_url,
    url_refused,
)
from clothing_assets.stage.resource import StageResource, configured_url, remember_url

__all__ = [
    "HTTP_ATTEMPTS",
    "LISTING_COLUMNS",
    "REFUSED_READ",
    "URL_REFUSED",
    "FileTooLargeError",
    "ReadLimits",
    "StageLocationError",
    "StageResource",
    "configured_url",
    "remember_url",
    "URLRefusedError",
    "UnsafePathError",
    "catalog_matches",
    "class_of",
    "list_stage",
    "listing_digest",
    "open_location",
    "read_bytes",
    "redact_url",
    "stage_file_url",
    "unsafe_reason",
    "url_refused",
]
