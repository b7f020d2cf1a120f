"""Every ``hubctl`` command docs/operations.md shows for answering questions and redelivering
dead letters (and in the runbooks that use them), run as written on the hub of the guide's
samples: the placeholders ORG and MSG_ID and the configuration's path replaced, each on a
fresh copy of the store, with the exit code the guide gives (``echo $?``) or 0."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from runtime.clock import now_ms
from tests.hub.test_ledger_tamper import Hub, make_hub
from tests.ops.test_where_is import documents, fill
from tests.world import REPO, World, make_world

GUIDE = REPO / "docs" / "operations.md"
CONFIG = "/etc/govxchg/hub.toml"
PLACES = {"ORG": "jl.sp", "MSG_ID": "f38d1176b05cec1fa39ef2dce1710f11"}
VERBS = ("find", "trace", "queue", "dead", "redeliver", "status")
NEEDS_ARGUMENTS = {"hubctl trace", "hubctl redeliver"}  # bare: the text names the command


def parts() -> str:
    """The sections and runbooks that document these commands."""
    text = GUIDE.read_text(encoding="utf-8")

    def between(start: str, end: str) -> str:
        begin = text.index(start)
        return text[begin : text.index(end, begin)]

    return "\n".join(
        [
            between("## Answering questions", "\n## "),
            between("## Redelivering dead letters", "\n## "),
            between("**Where is my document?**", "\n**A spoke is offline.**"),
            between("**A spoke is offline.**", "\n**A spoke says its document"),
        ]
    )


def commands() -> list[tuple[str, int]]:
    """(command, exit code the guide gives) in the guide's order."""
    found: list[tuple[str, int]] = []
    lines = parts().splitlines()
    verbs = "|".join(VERBS)
    in_sh = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_sh = line == "```sh"
            continue
        shown = re.match(rf"^\$ (?:systemctl stop hubd; )?(hubctl (?:{verbs})\b.*)$", line)
        typed = in_sh and re.match(rf"^(hubctl (?:{verbs})\b.*)$", line)
        if shown:
            code = 0
            if i + 2 < len(lines) and lines[i + 1] == "$ echo $?":
                code = int(lines[i + 2])
            else:  # its output, then perhaps '$ echo $?'
                after = next(
                    (j for j in range(i + 1, len(lines)) if lines[j].startswith("$")), None
                )
                if after is not None and lines[after] == "$ echo $?":
                    code = int(lines[after + 1])
            found.append((shown.group(1), code))
        elif typed:
            found += [(c, 0) for c in _variants(typed.group(1).split("#")[0])]
    for span in re.findall(rf"`(hubctl (?:{verbs})\b[^`]*)`", parts()):
        if " ".join(span.split()) not in NEEDS_ARGUMENTS:
            found += [(c, 0) for c in _variants(span)]
    return list(dict.fromkeys(found))


def _variants(command: str) -> list[str]:
    """``hubctl queue [ORG]`` -> without and with the optional part."""
    command = " ".join(command.split())
    return list(dict.fromkeys([re.sub(r" ?\[[^]]*\]", "", command), re.sub(r"[][]", "", command)]))


def test_the_guide_shows_find_queue_dead_and_redeliver_as_the_tests_below_run_them() -> None:
    shown = [c for c, _ in commands()]
    for start in (
        "hubctl find --from jl.gov --since 24h",
        "hubctl find --doc-number 吉政办发〔2026〕12号",
        "hubctl find --to ORG --since 2026-11-25",
        "hubctl queue",
        "hubctl dead",
        "hubctl redeliver --dead",
        "hubctl trace MSG_ID",
    ):
        assert start in shown, start


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guide's hub, its store written once (each command gets a copy)."""
    root = tmp_path_factory.mktemp("guide")
    hub = make_hub(root / "hub", make_world())
    fill(hub.url, documents(now_ms()))
    return hub.db


def test_every_question_and_redelivery_command_of_the_guide_runs_as_written(
    tmp_path: Path, world: World, sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub: Hub = make_hub(tmp_path / "hub", world)
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)  # a bare `hubctl queue` reads config/hub.toml
    shutil.copyfile(hub.config, work / "config" / "hub.toml")
    monkeypatch.chdir(work)
    ran = 0
    for command, code in commands():
        shutil.copyfile(sample, hub.db)
        text = command.replace(CONFIG, str(hub.config))
        for placeholder, value in PLACES.items():
            text = re.sub(rf"\b{placeholder}\b", value, text)
        hubctl_part, _, jq = text.partition(" | ")
        argv = shlex.split(hubctl_part)
        result = CliRunner().invoke(hubctl_app, argv[1:])
        assert result.exit_code == code, (command, result.output)
        assert "Traceback" not in result.output, command
        if jq and shutil.which("jq"):
            done = subprocess.run(  # noqa: S603 - the guide's own filter
                ["jq", *shlex.split(jq)[1:]],  # noqa: S607
                input=result.stdout,
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, (command, done.stderr)
            assert done.stdout.strip(), command
        ran += 1
    assert ran >= 20
