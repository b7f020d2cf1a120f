"""The ``spoke`` command as an operator types it, against a running hub and agents.

Issue, section 4: "``spoke send FILE... --to ... --classification ... --type ... --title
...`` is the same path as a drop; ``spoke status [MSG_ID]`` prints recent sends and their
receipts"; sign-for by ``spoke sign-for MSG_ID``. Refusals exit 2 with a sentence on
stderr and change nothing.

The tests share one exchange (hub on the embedded broker, jl.gov and jl.cc running);
each sends its own documents under its own names.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.spoke.procs import Exchange, SpokeProcess, make_exchange, spoke_command
from tests.world import World


@pytest.fixture(scope="module")
def running(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    exchange = make_exchange(tmp_path_factory.mktemp("cli"), world)
    try:
        asyncio.run(exchange.running("jl.gov", "jl.cc"))
        yield exchange
    finally:
        exchange.close()


@pytest.fixture
def gov(running: Exchange) -> SpokeProcess:
    return running.spokes["jl.gov"]


@pytest.fixture
def cc(running: Exchange) -> SpokeProcess:
    return running.spokes["jl.cc"]


def outbox_now(spoke: SpokeProcess) -> list[str]:
    return sorted(p.name for p in spoke.outbox.iterdir())


async def test_send_makes_a_drop_that_the_running_agent_sends_to_the_recipient(
    gov: SpokeProcess, cc: SpokeProcess, tmp_path: Path
) -> None:
    document = tmp_path / "供暖方案.txt"
    document.write_bytes("供暖方案正文\n".encode())
    done = gov.cli(
        "send",
        str(document),
        "--to",
        "jl.cc",
        "--classification",
        "内部",
        "--type",
        "通知",
        "--title",
        "关于印发供暖方案的通知",
        "--doc-number",
        "吉政办发〔2026〕15号",
    )
    assert done.returncode == 0, done.stderr
    assert "供暖方案.txt" in done.stdout

    status = await gov.wait_status("供暖方案.txt", "jl.cc")
    assert status["hub"] == "ACCEPTED"
    meta = await cc.wait_received("关于印发供暖方案的通知")
    assert meta["msg_id"] == status["msg_id"]
    assert meta["doc_type"] == "NOTICE"
    assert meta["doc_number"] == "吉政办发〔2026〕15号"
    assert (cc.inbox / meta["msg_id"] / "供暖方案.txt").read_bytes() == document.read_bytes()
    assert document.exists()  # the command copies; the operator's file stays where it was
    # the command declares what it copied, so the agent knows when the copy is whole
    digest = hashlib.sha256(document.read_bytes()).hexdigest()
    size = document.stat().st_size
    assert status["completeness"] == "declared"
    assert status["files"] == [{"name": "供暖方案.txt", "size": size, "sha256": digest}]
    written = json.loads(
        (gov.sent / status["msg_id"] / "供暖方案.txt.meta.json").read_text("utf-8")
    )
    assert written["files"] == [{"name": "供暖方案.txt", "size": size, "sha256": digest}]


async def test_send_of_several_files_makes_one_drop_with_every_file(
    gov: SpokeProcess, cc: SpokeProcess, tmp_path: Path
) -> None:
    files = {"正文.txt": b"main text\n", "附件1.csv": b"a,b\n1,2\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    done = gov.cli(
        "send",
        *(str(tmp_path / name) for name in files),
        "--to",
        "jl.cc",
        "--classification",
        "INTERNAL",
        "--type",
        "NOTICE",
        "--title",
        "两个文件的通知",
        "--name",
        "两个文件",
    )
    assert done.returncode == 0, done.stderr
    await gov.wait_status("两个文件", "jl.cc")
    meta = await cc.wait_received("两个文件的通知")
    assert {f["name"] for f in meta["files"]} == set(files)
    for name, data in files.items():
        assert (cc.inbox / meta["msg_id"] / name).read_bytes() == data


def test_send_refuses_a_missing_file_with_exit_2_and_a_sentence(
    gov: SpokeProcess, tmp_path: Path
) -> None:
    before = outbox_now(gov)
    missing = tmp_path / "不存在.txt"
    done = gov.cli(
        "send",
        str(missing),
        "--to",
        "jl.cc",
        "--classification",
        "内部",
        "--type",
        "通知",
        "--title",
        "t",
    )
    assert done.returncode == 2
    assert done.stderr.startswith("spoke send: ")
    assert str(missing) in done.stderr
    assert "not a file" in done.stderr
    assert "Traceback" not in done.stderr
    assert outbox_now(gov) == before


def test_send_refuses_a_name_already_in_the_outbox_with_exit_2(
    running: Exchange, tmp_path: Path
) -> None:
    idle = running.spoke("jl.jl")  # installed, never started: its outbox stays as we leave it
    idle.write()
    idle.outbox.mkdir(parents=True)
    (idle.outbox / "简报.txt").write_bytes(b"an integrator's document, metadata to come\n")
    document = tmp_path / "简报.txt"
    document.write_bytes(b"another document with the same name\n")
    args = ["--to", "jl.gov", "--classification", "内部", "--type", "函", "--title", "简报"]

    done = idle.cli("send", str(document), *args)
    assert done.returncode == 2
    assert done.stderr.startswith("spoke send: ")
    assert "'简报.txt' is already in the outbox" in done.stderr
    assert "--name" in done.stderr  # and what to do about it
    assert outbox_now(idle) == ["简报.txt"]
    assert (
        idle.outbox / "简报.txt"
    ).read_bytes() == b"an integrator's document, metadata to come\n"

    renamed = idle.cli("send", str(document), *args, "--name", "简报-2.txt")
    assert renamed.returncode == 0, renamed.stderr
    assert outbox_now(idle) == ["简报-2.txt", "简报-2.txt.meta.json", "简报.txt"]


async def test_status_lists_the_send_with_its_drop_name_and_each_recipients_status(
    gov: SpokeProcess, tmp_path: Path
) -> None:
    gov.drop(
        "状态.txt",
        b"status\n",
        {"to": "jl.cc, jl.jl", "密级": "内部", "文种": "通知", "标题": "状态"},
    )
    status = await gov.wait_status("状态.txt", "jl.cc")
    msg_id = status["msg_id"]

    listing = gov.cli("status")
    assert listing.returncode == 0, listing.stderr
    (row,) = [line for line in listing.stdout.splitlines() if msg_id in line]
    assert "状态.txt" in row
    assert "ACCEPTED" in row
    assert "jl.cc: DELIVERED" in row

    one = gov.cli("status", msg_id)
    assert one.returncode == 0, one.stderr
    table, files = one.stdout.split("\n\n")
    rows = [line for line in table.splitlines()[1:] if line.strip()]
    assert len(rows) == 1
    assert msg_id in rows[0]
    assert "jl.cc: DELIVERED" in rows[0]
    # what was sealed, to compare with sha256sum at both ends
    sent = gov.sent / msg_id / "状态.txt"
    (file_row,) = files.splitlines()[2:]
    assert file_row.split() == ["状态.txt", "7", "B", hashlib.sha256(sent.read_bytes()).hexdigest()]
    assert "taken as complete: metadata_last" in files


def test_status_refuses_a_malformed_msg_id_with_exit_2_and_a_sentence(gov: SpokeProcess) -> None:
    done = gov.cli("status", "not-a-msg-id")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("spoke status: ")
    assert "32" in done.stderr  # what a msg_id looks like
    assert "Traceback" not in done.stderr


def test_sign_for_refuses_a_msg_id_not_in_the_inbox_with_exit_2(cc: SpokeProcess) -> None:
    unknown = "0123456789abcdef0123456789abcdef"
    done = cc.cli("sign-for", unknown)
    assert done.returncode == 2
    assert done.stderr.startswith("spoke sign-for: ")
    assert unknown in done.stderr
    assert "is not in" in done.stderr
    assert list(cc.signfor.iterdir()) == []  # no request was left for the agent

    malformed = cc.cli("sign-for", "xyz")
    assert malformed.returncode == 2
    assert "32 lowercase hex digits" in malformed.stderr
    assert list(cc.signfor.iterdir()) == []


def test_run_with_a_missing_key_file_exits_2_naming_the_file(
    running: Exchange, world: World, tmp_path: Path
) -> None:
    spoke = SpokeProcess(tmp_path / "broken", "jl.sp", world, running.port, ("govnet",))
    missing = tmp_path / "nowhere" / "jl.sp.sign.key"
    config = spoke.write(sign_key=str(missing))

    done = spoke_command("run", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.startswith("spoke run: ")
    assert str(missing) in done.stderr
    assert "does not exist" in done.stderr
    assert "spoke.sign_key" in done.stderr
    assert "Traceback" not in done.stderr
