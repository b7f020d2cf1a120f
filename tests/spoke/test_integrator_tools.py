"""A running spoke driven with the tools integrators use (issue 10, section 4).

rsync with a bandwidth limit, cp (metadata first), a writer that pauses mid-file, a
Samba-style writer (the file set to its final size first, written in pieces, its mtime set
back at the end), mv of a folder from another file system, GBK-named files from a Windows
share, the same drop copied twice, and random names and file kinds. One hub on the
embedded broker, 吉林省人民政府办公厅 (jl.gov) sending to 长春市 (jl.cc), both real processes.

After every test the whole exchange is counted: nothing sent incomplete (each file in the
recipient's inbox has the bytes the sender's sent/ holds and status.json states), nothing
lost (every drop is in sent/ or failed/ with its explanation), nothing sent twice (one
sent folder per msg_id, one inbox folder per msg_id), the agents alive.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spoke.files import shown_name
from tests.spoke.procs import (
    Exchange,
    SpokeProcess,
    eventually,
    make_exchange,
    toml_meta,
    write_raw,
)
from tests.world import REPO, World

RSYNC = shutil.which("rsync")
# The sender's limits: quick enough for a test, with the margins a loaded machine needs.
LIMITS = {"stable_for_unordered": 3.0, "metadata_wait": 6.0}
PAUSE = 0.8  # a writer's pause: four times stable_for (0.2 s), well below 3.0 s


def notice(title: str, **more: object) -> dict[str, object]:
    return {"主送": "jl.cc", "密级": "内部", "文种": "通知", "标题": title, **more}


@pytest.fixture(scope="module")
def exchange(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    made = make_exchange(tmp_path_factory.mktemp("tools"), world, "embedded")
    try:
        made.spoke("jl.gov", **LIMITS)
        asyncio.run(made.running("jl.gov", "jl.cc"))
        yield made
    finally:
        made.close()


@pytest.fixture
def gov(exchange: Exchange) -> Iterator[SpokeProcess]:
    sender = exchange.spokes["jl.gov"]
    yield sender
    count(exchange)


def count(exchange: Exchange) -> None:
    """Nothing sent incomplete, nothing lost, nothing sent twice, the agents alive."""
    gov, cc = exchange.spokes["jl.gov"], exchange.spokes["jl.cc"]
    for spoke in (gov, cc):
        assert spoke.running, f"the spoke of {spoke.org} died; see {spoke.log}"
    received = cc.received()
    for status in gov.status_files():
        msg_id = status["msg_id"]
        stated = {f["name"]: (f["size"], f["sha256"]) for f in status["files"]}
        sent = gov.sent / msg_id
        on_disk = {
            p.relative_to(sent).name: (p.stat().st_size, sha256(p))
            for p in sent.rglob("*")
            if p.is_file()
            and p.name != "status.json"
            and not p.name.endswith(".meta.toml")
            and not p.name.endswith(".meta.json")
        }
        assert on_disk == stated, f"sent/{msg_id} holds other bytes than were sealed"
        if status["recipients"].get("jl.cc", {}).get("status") == "DELIVERED":
            inbox = received[msg_id]
            got = {f["original_name"]: (f["size"], f["sha256"]) for f in inbox["files"]}
            assert got == stated, f"{msg_id} arrived other than it was sent"
            for f in inbox["files"]:
                path = cc.inbox / msg_id / f["name"]
                assert sha256(path) == f["sha256"], f"{msg_id}: {f['name']} does not match"
    names = [s["name"] for s in gov.status_files()]
    assert len(names) == len(set(names)), "a drop was sent twice"
    assert len({s["msg_id"] for s in gov.status_files()}) == len(gov.status_files())
    for name in gov.failure_names():
        assert explained(gov, shown_name(name)), f"failed/{shown_name(name)} has no explanation"
    assert not gov.logged("outbox.scan_failed"), "a scan pass failed"
    assert not gov.logged("drop.error"), "a drop met an unexpected error"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def explained(spoke: SpokeProcess, name: str) -> dict[str, Any] | None:
    for path in spoke.failed.glob("*.error.json"):
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if data["name"] == name or data["original_name"] == name:
            return data
    return None


def claimed(spoke: SpokeProcess) -> list[Path]:
    """Drops in the work area: a drop refused after its claim stays there until failed/
    has it and its explanation (an empty outbox alone is not the end of it)."""
    work = spoke.work / "work"
    return [p for p in work.iterdir() if p.is_dir()] if work.exists() else []


def blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def delivered(gov: SpokeProcess, name: str) -> dict[str, Any]:
    return await gov.wait_status(name, "jl.cc", within=90)


def files_of(status: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["sha256"] for f in status["files"]}


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


async def run(*command: str) -> None:
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{command}: {done.stderr}"


# ------------------------------------------------------------------ the tools


@pytest.mark.skipif(RSYNC is None, reason="rsync is not installed (.ci/run installs it)")
async def test_rsync_with_a_bandwidth_limit_delivers_every_file_of_a_folder_drop(
    gov: SpokeProcess, tmp_path: Path
) -> None:
    """rsync sends 吉政发4.meta.toml first (it sorts before the folder) and each file as
    .NAME.XXXXXX, renamed when complete; with --bwlimit the pauses exceed stable_for."""
    files = {
        "正文.txt": blob(1, 40_000),
        "附件1.pdf": blob(2, 90_000),
        "附件2.xlsx": blob(3, 90_000),
    }
    source = tmp_path / "src"
    (source / "吉政发4").mkdir(parents=True)
    for name, data in files.items():
        (source / "吉政发4" / name).write_bytes(data)
    (source / "吉政发4.meta.toml").write_text(toml_meta(notice("rsync")), encoding="utf-8")

    await run("rsync", "-a", "--bwlimit=100", f"{source}/", f"{gov.outbox}/")

    status = await delivered(gov, "吉政发4")
    assert files_of(status) == digests(files)


GUIDE = REPO / "docs" / "integrators.md"


def guide_command(start: str) -> str:
    """The command of docs/integrators.md that begins with ``start``, as written there."""
    lines = [
        line for line in GUIDE.read_text(encoding="utf-8").splitlines() if line.startswith(start)
    ]
    assert len(lines) == 1, f"docs/integrators.md should show one command starting {start!r}"
    return lines[0]


def folder_drop(source: Path, name: str, files: dict[str, bytes], title: str) -> None:
    (source / name).mkdir(parents=True)
    for file_name, data in files.items():
        (source / name / file_name).write_bytes(data)
    (source / f"{name}.meta.toml").write_text(toml_meta(notice(title)), encoding="utf-8")


async def interrupted(command: list[str], after: float) -> None:
    """``command`` started, and stopped with SIGINT (Ctrl-C) after ``after`` seconds."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    await asyncio.sleep(after)
    process.send_signal(signal.SIGINT)
    await process.wait()


@pytest.mark.skipif(RSYNC is None, reason="rsync is not installed (.ci/run installs it)")
async def test_rsync_in_two_runs_as_the_guide_shows_sends_nothing_of_an_interrupted_copy(
    gov: SpokeProcess, tmp_path: Path
) -> None:
    files = {"正文.pdf": blob(20, 300_000), "附件.pdf": blob(21, 1_000)}
    source = tmp_path / "src"
    folder_drop(source, "吉政发7", files, "rsync twice")
    first_run = guide_command("rsync -a --exclude=").split(" && ")[0]
    slow_first_run = first_run.replace("rsync -a ", "rsync -a --bwlimit=100 ", 1)
    await interrupted(
        [
            "bash",
            "-c",
            slow_first_run.replace("SRC/", f"{source}/").replace("OUTBOX/", f"{gov.outbox}/"),
        ],
        after=1.0,
    )
    assert not (gov.outbox / "吉政发7.meta.toml").exists()  # the second run never started
    await asyncio.sleep(LIMITS["stable_for_unordered"] + 1.0)
    assert gov.status("吉政发7") is None  # what arrived is not sent: no metadata file came

    command = guide_command("rsync -a --exclude=")  # run again, whole, as written
    await run(
        "bash", "-c", command.replace("SRC/", f"{source}/").replace("OUTBOX/", f"{gov.outbox}/")
    )
    status = await delivered(gov, "吉政发7")
    assert files_of(status) == digests(files)


@pytest.mark.skipif(RSYNC is None, reason="rsync is not installed (.ci/run installs it)")
async def test_interrupted_rsync_partial_of_a_declared_drop_is_refused_never_sent_part_way(
    gov: SpokeProcess, tmp_path: Path
) -> None:
    """rsync -P keeps an interrupted file under its own name and has sent the metadata
    file first: only the declaration (spoke declare, as the guide shows) tells."""
    files = {"正文.pdf": blob(22, 300_000), "附件.pdf": blob(23, 1_000)}
    source = tmp_path / "src"
    folder_drop(source, "吉政发8", files, "rsync partial")
    declare = guide_command("spoke declare ").replace("吉政发〔2026〕5号", "吉政发8")
    spoke_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{spoke_bin}:{os.environ['PATH']}"}
    done = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", declare],
        cwd=source,
        env=env,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    await interrupted(["rsync", "-aP", "--bwlimit=100", f"{source}/", f"{gov.outbox}/"], after=1.0)
    data = await eventually(lambda: explained(gov, "吉政发8"), "the partial copy to be refused")
    assert data["rule"] == "drop.declared_mismatch"
    assert gov.status("吉政发8") is None

    await run("rsync", "-a", f"{source}/", f"{gov.outbox}/")  # the operator runs it again
    status = await delivered(gov, "吉政发8")
    assert files_of(status) == digests(files)
    assert status["completeness"] == "declared"


async def test_cp_of_the_metadata_first_and_then_the_document_delivers_it_whole(
    gov: SpokeProcess, tmp_path: Path
) -> None:
    document = blob(4, 3_000_000)
    (tmp_path / "方案.pdf").write_bytes(document)
    (tmp_path / "方案.pdf.meta.toml").write_text(toml_meta(notice("cp")), encoding="utf-8")
    await run("cp", str(tmp_path / "方案.pdf.meta.toml"), str(gov.outbox))
    await asyncio.sleep(PAUSE)  # the operator types the second command
    await run("cp", str(tmp_path / "方案.pdf"), str(gov.outbox))

    status = await delivered(gov, "方案.pdf")
    assert files_of(status) == digests({"方案.pdf": document})


WRITER = """
import sys, time
path, first, second, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
with open(path, "wb") as handle:
    handle.write(b"a" * first)
    handle.flush()
    time.sleep(pause)
    handle.write(b"b" * second)
"""


async def test_writer_pausing_mid_file_after_the_metadata_is_never_sent_truncated(
    gov: SpokeProcess,
) -> None:
    gov.outbox.joinpath("汇报.txt.meta.toml").write_text(
        toml_meta(notice("paused")), encoding="utf-8"
    )
    await run(
        sys.executable, "-c", WRITER, str(gov.outbox / "汇报.txt"), "30000", "30000", str(PAUSE)
    )
    status = await delivered(gov, "汇报.txt")
    assert files_of(status) == digests({"汇报.txt": b"a" * 30000 + b"b" * 30000})


SAMBA = """
import os, sys, time
path, size, pieces, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, size)            # Windows sets the end of file first: the size is final
step = size // pieces
for i in range(pieces):
    os.pwrite(fd, bytes([65 + i]) * step, i * step)
    time.sleep(pause)
os.utime(fd, (1_600_000_000, 1_600_000_000))  # and the source's last-write time, in the past
os.close(fd)
"""


async def test_samba_style_writer_with_the_final_size_from_the_start_is_sent_whole(
    gov: SpokeProcess,
) -> None:
    gov.outbox.joinpath("报表.xlsx.meta.toml").write_text(
        toml_meta(notice("samba")), encoding="utf-8"
    )
    await run(sys.executable, "-c", SAMBA, str(gov.outbox / "报表.xlsx"), "40000", "4", "0.5")
    expected = b"".join(bytes([65 + i]) * 10000 for i in range(4))
    status = await delivered(gov, "报表.xlsx")
    assert files_of(status) == digests({"报表.xlsx": expected})


async def test_mv_of_a_folder_from_another_file_system_delivers_it_whole(
    gov: SpokeProcess, tmp_path: Path
) -> None:
    shm = Path("/dev/shm")  # noqa: S108 - a tmpfs: mv across file systems copies the files
    base = shm if os.access(shm, os.W_OK) else tmp_path
    source = Path(base) / f"govxchg-mv-{os.getpid()}" / "吉政函5"
    source.mkdir(parents=True)
    files = {f"附件{i}.bin": blob(10 + i, 200_000) for i in range(5)}
    try:
        for name, data in files.items():
            (source / name).write_bytes(data)
        gov.outbox.joinpath("吉政函5.meta.toml").write_text(
            toml_meta(notice("mv")), encoding="utf-8"
        )
        await run("mv", str(source), str(gov.outbox))
    finally:
        shutil.rmtree(source.parent, ignore_errors=True)
    status = await delivered(gov, "吉政函5")
    assert files_of(status) == digests(files)


GBK = "公文".encode("gbk")  # b'\xb9\xab\xce\xc4': a name from a Windows share


async def test_gbk_names_in_the_outbox_and_signfor_leave_the_agent_running(
    gov: SpokeProcess,
) -> None:
    """watchfiles raised on such a path and the spoke died, again on restart, and then
    logged outbox.scan_failed every second."""
    outbox, signfor = os.fsencode(gov.outbox), os.fsencode(gov.signfor)
    write_raw(outbox + b"/" + GBK + b".txt", "公文正文".encode("gbk"))
    write_raw(outbox + b"/" + GBK + b".txt.meta.toml", toml_meta(notice("gbk")).encode())
    write_raw(signfor + b"/" + GBK, b"")

    data = await eventually(
        lambda: explained(gov, "\\xb9\\xab\\xce\\xc4.txt"),
        "the GBK-named drop to be answered in failed/",
    )
    assert data["rule"] == "drop.bad_name"
    await eventually(
        lambda: not any(e.name == os.fsdecode(GBK) for e in os.scandir(gov.signfor)),
        "the GBK-named sign-for request to be answered",
    )
    # and the agent still sends
    gov.drop("之后.txt", b"after the GBK names\n", notice("after"))
    await delivered(gov, "之后.txt")
    assert len(gov.logged("outbox.watch_restarted")) <= 1


async def test_the_same_drop_copied_twice_is_sent_once(gov: SpokeProcess, tmp_path: Path) -> None:
    (tmp_path / "重复.txt").write_bytes(b"the same document\n")
    (tmp_path / "重复.txt.meta.toml").write_text(toml_meta(notice("twice")), encoding="utf-8")
    await run(
        "cp", str(tmp_path / "重复.txt"), str(tmp_path / "重复.txt.meta.toml"), str(gov.outbox)
    )
    first = await delivered(gov, "重复.txt")
    await run(
        "cp", str(tmp_path / "重复.txt"), str(tmp_path / "重复.txt.meta.toml"), str(gov.outbox)
    )

    data = await eventually(lambda: explained(gov, "重复.txt"), "the second copy in failed/")
    assert data["rule"] == "drop.duplicate"
    assert first["msg_id"] in data["message"]


# ------------------------------------------------------------------ random names and kinds


def random_name(rng: random.Random, limit: int) -> bytes:
    """A file name as bytes: any byte but / and NUL, up to ``limit`` bytes long."""
    kind = rng.choice(["cjk", "bytes", "control", "nfd", "dots", "long", "windows"])
    if kind == "cjk":
        text = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 12)))
        raw = (text + rng.choice([".txt", ".pdf", "", ".docx"])).encode()
    elif kind == "bytes":
        raw = bytes(
            rng.choice([b for b in range(1, 256) if b != 0x2F]) for _ in range(rng.randint(1, 40))
        )
    elif kind == "control":
        raw = f"报告{chr(rng.randint(1, 31))}{rng.randint(0, 99)}.txt".encode()
    elif kind == "nfd":
        raw = unicodedata.normalize("NFD", f"résumé-{rng.randint(0, 999)}.txt").encode()
    elif kind == "dots":
        raw = (
            rng.choice([b"..", b"...", b". ", b"a.", b"a ", b"..\\x"]) + str(rng.random()).encode()
        )
    elif kind == "windows":
        raw = rng.choice([b"CON", b"nul.txt", b"COM1.pdf", b"a:b.txt", b'a"b.txt', b"a?.txt"])
    else:
        raw = "长".encode() * (limit // 3)
    return raw[:limit] or b"x"


def ignored(raw: bytes) -> bool:
    """The documented names the spoke never takes (docs/integrators.md): temporaries,
    clutter and error files."""
    name = os.fsdecode(raw)
    lowered = name.lower()
    return (
        (name.startswith(".") and not name.startswith(".."))
        or name.startswith("~$")
        or lowered.endswith((".part", ".tmp", ".error.txt", ".error.json"))
        or lowered in {"thumbs.db", "desktop.ini"}
    )


async def test_random_names_and_file_kinds_each_end_in_sent_or_failed_with_the_agent_alive(
    gov: SpokeProcess,
) -> None:
    seed = int(os.environ.get("GOVX_FUZZ_SEED", random.SystemRandom().randrange(1 << 30)))
    rng = random.Random(seed)
    outbox = os.fsencode(gov.outbox)
    name_max = os.pathconf(gov.outbox, "PC_NAME_MAX")
    made: list[bytes] = []

    def usable(raw: bytes) -> bool:
        return not (
            ignored(raw)
            or raw in made
            or raw.endswith((b".meta.toml", b".meta.json"))
            or any(raw.startswith(m) or m.startswith(raw) for m in made)  # no meta clashes
        )

    while len(made) < 40:
        with_meta = rng.random() < 0.7
        room = len(b".meta.toml") if with_meta else 0
        if rng.random() < 0.1:  # the same text in NFC and in NFD: two drops
            text = f"{rng.choice(['é', 'ü', 'å', 'ñ'])}{rng.randint(0, 9999)}.txt"
            raws = [unicodedata.normalize(f, text).encode() for f in ("NFC", "NFD")]
        else:
            raws = [random_name(rng, name_max - room)]
        raws = [r for r in raws if usable(r)]
        for raw in raws:
            path = outbox + b"/" + raw
            kinds = ["file", "file", "empty", "folder", "symlink", "fifo", "nested"]
            if len(raw) + len(b".orig") <= name_max:
                kinds.append("hardlink")
            kind = rng.choice(kinds)
            if kind in ("file", "empty"):
                write_raw(path, b"" if kind == "empty" else rng.randbytes(rng.randint(1, 5000)))
            elif kind in ("folder", "nested"):
                os.mkdir(path)  # noqa: PTH102 - a name in bytes, not always UTF-8
                write_raw(path + b"/" + random_name(rng, 100), rng.randbytes(100))
                if kind == "nested":
                    os.mkdir(path + b"/inner")  # noqa: PTH102
            elif kind == "symlink":
                os.symlink(b"/etc/hostname", path)  # noqa: PTH211
            elif kind == "fifo":
                os.mkfifo(path)
            else:
                write_raw(path + b".orig", b"linked")
                os.link(path + b".orig", path)
                os.rename(  # noqa: PTH104
                    path + b".orig", outbox + b"/.hidden-" + str(len(made)).encode()
                )
            made.append(raw)
            if with_meta:
                meta = toml_meta(notice(f"fuzz {len(made)}")).encode()
                if rng.random() < 0.15:
                    meta = rng.choice([b"[[[", b"\xff\xfe", b"to = " + b"9" * 5000, b""])
                write_raw(path + b".meta.toml", meta)

    def settled() -> bool:
        left = [n for n in os.listdir(outbox) if not ignored(n)]  # noqa: PTH208 - bytes names
        queued = gov.state_rows("SELECT 1 FROM outbound WHERE state = 'QUEUED'")
        return not left and not queued and not claimed(gov)

    await eventually(settled, f"every random drop to be answered (seed {seed})", within=120)
    sent = {row[0] for row in gov.state_rows("SELECT name FROM outbound WHERE state = 'ACCEPTED'")}
    for raw in made:
        name = os.fsdecode(raw)
        assert name in sent or explained(gov, shown_name(name)), (
            f"seed {seed}: {raw!r} is neither sent nor explained in failed/"
        )
    assert gov.running, f"seed {seed}: the agent died"
