"""Reading stage files over HTTP from a real server on 127.0.0.1 that truncates and trickles:
retried, bounded by a deadline, and recorded per row rather than raised."""

from __future__ import annotations

import pytest

from clothing_assets.ml.scoring import score_batch
from clothing_assets.stage import ReadLimits, read_bytes
from clothing_assets.stage.reading import HTTP_ATTEMPTS
from clothing_assets_tests.support import (
    COLOURS,
    write_image,
)
from clothing_assets_tests.support.models import tiny_model
from clothing_assets_tests.support.presign_server import PresignServer, serve


@pytest.fixture
def http_stage(tmp_path):
    root = tmp_path / "st"
    for name in ("good", "short", "slow"):
        write_image(root / "hat" / f"{name}.jpg", COLOURS["hat"], seed=len(name))
    server = PresignServer(
        roots={"st": root},
        delay_s=0.0,
        truncate={("st", "hat/short.jpg")},
        trickle={("st", "hat/slow.jpg")},
        trickle_s=0.5,
    )
    with serve(server):
        yield server, root


@pytest.mark.timeout(60)
def test_a_truncated_body_is_retried_then_recorded_not_raised(http_stage):
    server, root = http_stage
    url = server.mint("st", "hat/short.jpg", expires_at=9e9)
    with pytest.raises(OSError, match="IncompleteRead") as failed:
        read_bytes(url, ReadLimits(timeout_s=5, deadline_s=30))
    assert f"after {HTTP_ATTEMPTS} attempts" in str(failed.value)
    assert server.statuses("st", "hat/short.jpg") == [200] * HTTP_ATTEMPTS  # retried
    assert "signature" not in str(failed.value)


@pytest.mark.timeout(60)
def test_a_trickling_server_cannot_hold_a_read_past_its_deadline(http_stage):
    server, _ = http_stage
    url = server.mint("st", "hat/slow.jpg", expires_at=9e9)  # ~1,000 bytes at 2 bytes/s
    with pytest.raises(OSError, match="CLOTHING_HTTP_DEADLINE_SECONDS"):
        read_bytes(url, ReadLimits(timeout_s=1, deadline_s=2))


@pytest.mark.timeout(120)
def test_a_scoring_batch_records_bad_reads_per_row_and_scores_the_rest(http_stage):
    server, root = http_stage
    model, version = tiny_model()
    rows = [
        {
            "RELATIVE_PATH": f"hat/{name}.jpg",
            "SIZE": (root / "hat" / f"{name}.jpg").stat().st_size,
            "LAST_MODIFIED": None,
            "URL": server.mint("st", f"hat/{name}.jpg", expires_at=9e9),
        }
        for name in ("good", "short", "slow")
    ]
    out = {
        r["RELATIVE_PATH"]: r
        for r in score_batch(model, version, rows, limits=ReadLimits(timeout_s=1, deadline_s=3))
    }
    assert out["hat/good.jpg"]["ERROR"] is None and out["hat/good.jpg"]["TYPE"] is not None
    for name in ("short", "slow"):
        error = out[f"hat/{name}.jpg"]["ERROR"]
        assert error.startswith("unreadable file: HTTP read failed"), error
        assert out[f"hat/{name}.jpg"]["TYPE"] is None
