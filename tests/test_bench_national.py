"""bench/national.py, the directory at national scale: it runs end to end at a tiny size and
reports every figure it promises (no timing is asserted: the machine is shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.national import Row, format_table

REPO = Path(__file__).resolve().parent.parent


def test_tiny_national_bench_reports_every_figure_for_every_spoke(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    run = subprocess.run(  # noqa: S603 - our own bench script
        [sys.executable, str(REPO / "bench" / "national.py"), "--orgs", "200", "--spokes", "20",
         "--timeout", "120", "--tmp", str(tmp_path / "run"), "--json", str(out)],
        capture_output=True, text=True, timeout=280, check=False, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    [row] = json.loads(out.read_text())
    assert row["notes"] == [], row["notes"]
    frame = row["directory_bytes"]
    assert frame > 200 * 300  # a few hundred bytes per organisation
    # Today every spoke takes the whole frame, on connecting and again on a new version.
    assert row["taken_per_spoke"] == frame
    assert row["taken_total"] == 20 * frame
    assert row["rotation_spokes"] == 20
    assert row["rotation_per_spoke"] > frame  # v2 also lists the rotated-out key as revoked
    assert row["hub_online"] == 20
    timed = ("connected_s", "all_taken_s", "all_hello_s", "rotation_s", "check_ms")
    memory = ("broker_connect_peak_mb", "broker_peak_mb", "hub_peak_mb", "bench_peak_mb")
    for figure in (*timed, *memory):
        assert row[figure] is not None, figure
        assert row[figure] > 0, figure
    assert "| one key rotation: bytes per spoke |" in run.stdout


def test_a_refused_directory_is_reported_with_hubctls_sentence_and_where_the_limit_falls() -> None:
    signed = Row(10_000, 10_000, directory_bytes=4_700_000)
    refused = Row(100_000, 10_000, refusal="the directory is 56089502 bytes; the limit is 8 MiB")
    table = format_table([signed, refused], "whole frame")
    assert "| signed directory | 4.70 MB | **refused** (56.09 MB) |" in table
    assert "- 100,000 organisations: the directory is 56089502 bytes; the limit is 8 MiB" in table
    assert (
        "- at 470 bytes per organisation the 8 MiB limit falls near 17,848 organisations" in table
    )
