"""docs/operations.md's ``jq`` recipes, run as written over a log with a stray line.

Issue 13: a traceback (or any line that is not JSON) among hubd's JSON lines stopped the
documented ``journalctl -u hubd -o cat | jq ...`` recipes at that line. Each recipe here
runs in bash as the doc writes it, with ``journalctl -u hubd -o cat [-f] [--since X]``
replaced by ``cat`` of a log holding a stray line before the events it looks for.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.world import REPO

OPERATIONS = REPO / "docs" / "operations.md"
JOURNAL = re.compile(r"^journalctl -u hubd -o cat( -f)?( --since (\"[^\"]*\"|\S+))?")
MSG_ID = "61a070d374b748bfe08a02599b441ee2"  # the id the recipes' "life of one message" uses


def recipes() -> list[str]:
    """The commands of the Recipes block and every inline `journalctl ... | jq ...`."""
    text = OPERATIONS.read_text(encoding="utf-8")
    block = text.split("### Recipes", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    found = [line for line in block.splitlines() if line.startswith("journalctl ")]
    found += re.findall(r"`(journalctl -u hubd -o cat \| jq [^`]+)`", text)
    return found


def event(name: str, level: str = "info", **fields: object) -> str:
    at = "2026-12-06T08:00:00.000000Z"
    return json.dumps({"event": name, "level": level, "timestamp": at, **fields})


LOG = [
    "hubd run: 配置有误：请按后面的说明修正后重试 / hub configuration: hub.key: missing",
    "aiomqtt: a library's warning on stderr",
    event(
        "broker.unreachable",
        "warning",
        broker="mqtt://n1:1883,mqtt://n2:1883",
        node="mqtt://n1:1883",
        error="[Errno 111] Connection refused",
        retry_in=0,
    ),
    event(
        "broker.connected",
        broker="mqtt://n1:1883,mqtt://n2:1883",
        channels=["govnet"],
        node="mqtt://n2:1883",
    ),
    event("hub.ready", connected=["embedded"]),
    "42",  # JSON, but not an event
    event("spoke.online", org="jl.cc", channel="govnet"),
    event("message.accepted", msg_id=MSG_ID, sender="jl.gov", channel="govnet"),
    event(
        "message.rejected",
        "warning",
        msg_id="0" * 32,
        sender="jl.cc",
        reason="rule.skip_level",
        rules=["rule.skip_level"],
        detail="skips a level",
    ),
    event("rule.warned", "warning", msg_id=MSG_ID, rule="rule.doc_number_form"),
    event("delivery.acked", msg_id=MSG_ID, recipient="jl.cc", latency_ms=120),
    event("message.quarantined", "error", msg_id="1" * 32, sender="jl.gov"),
    event("directory.expiring", "warning", version=3, days_left=5),
    "Traceback (most recent call last):",
]


@pytest.mark.parametrize("recipe", recipes())
def test_each_log_recipe_runs_as_written_past_a_line_that_is_not_json(
    recipe: str, tmp_path: Path
) -> None:
    log = tmp_path / "hubd.log"
    log.write_text("\n".join(LOG) + "\n", encoding="utf-8")
    command, replaced = JOURNAL.subn(f"cat {log}", recipe)
    assert replaced == 1, recipe

    done = subprocess.run(  # noqa: S603 - the documented command, over our own file
        ["/bin/bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    if "ORG" not in recipe and "MSG_ID" not in recipe:  # a placeholder matches nothing
        assert done.stdout.strip(), f"{recipe} found nothing in a log that has it"


def test_the_recipes_are_found() -> None:
    assert len(recipes()) >= 10
