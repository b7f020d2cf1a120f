"""docs/operations.md, "Joining a province to the national exchange", run as written: its
``[[hubs]]`` entries on both sides, its build command on each hub's folder (the documented
``/etc/govxchg`` layout under tmp_path), in its bootstrap order, with the lines it shows;
its uplink (step 4) connecting the two hubs as real processes, with what ``hubctl status``
shows; and its table of refusals names what the build says."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.clock import now_ms
from runtime.ports import free_port
from schemas import topics
from schemas.directory import verify_directory
from schemas.keys import HubPublicKey
from tests.ops.fedsite import BOTH, CHANNELS, GOVNET, org
from tests.test_key_tools import hubctl, keygen, ok
from tests.world import REPO

GUIDE = REPO / "docs" / "operations.md"
FEDERATION = REPO / "hubd" / "provision" / "federation.py"
ETC = "/etc/govxchg"


def section() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    begin = text.index("## Joining a province to the national exchange")
    return text[begin : text.index("\n## ", begin + 1)]


def step(title: str) -> str:
    """The subsection of the section that starts with ``### title``."""
    text = section()
    begin = text.index(f"### {title}")
    return text[begin : text.index("\n### ", begin + 1)]


def toml_blocks() -> tuple[str, str]:
    """The national hub's entry for Jilin, and Jilin's for the national hub."""
    national, provincial = re.findall(r"```toml\n(.*?)```", step("2. "), re.DOTALL)
    return national, provincial


def build_command(etc: Path) -> list[str]:
    """The section's build command, for the hub whose /etc/govxchg is ``etc``."""
    block = section().split("```sh\n", 1)[1].split("```", 1)[0]
    (line,) = block.replace("\\\n", " ").splitlines()
    return shlex.split(line.replace(ETC, str(etc)))


def machine(root: Path, hub_id: str, topology: str, orgs: tuple[str, ...]) -> Path:
    """A hub's /etc/govxchg: topology, orgs/ with the organisations' keys, hub/ with its."""
    etc = root / hub_id / "etc" / "govxchg"
    (etc / "orgs").mkdir(parents=True)
    (etc / "federation").mkdir()
    (etc / "topology.toml").write_text(topology, encoding="utf-8")
    for org_id in orgs:
        ok(keygen(org_id, root / hub_id / "spokes" / org_id))
        pub = root / hub_id / "spokes" / org_id / f"{org_id}.pub.json"
        shutil.copyfile(pub, etc / "orgs" / pub.name)
    ok(hubctl("keys", "init", "--out", str(etc / "hub")))
    return etc


def build(etc: Path) -> str:
    argv = build_command(etc)
    assert argv[:3] == ["hubctl", "directory", "build"]
    return ok(hubctl(*argv[1:])).stdout


def hand_over(source: Path, target: Path) -> None:
    """One operator's file, saved by the other where the section says."""
    assert f"federation/{target.name}" in section(), target.name
    shutil.copyfile(source, target)


def joined(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """The national hub's and Jilin's /etc/govxchg after steps 1 to 3 as written, and what
    each build said."""
    national_entry, provincial_entry = toml_blocks()
    head = '[hub]\nid = "{}"\nname_zh = "{}"\nname_en = "{}"\n'
    cn = machine(
        tmp_path,
        "cn.hub",
        head.format("cn.hub", "国家电子公文交换中心", "National hub")
        + CHANNELS
        + org("cn.gov", "national", None, channels=BOTH, zh="国务院办公厅")
        + national_entry,
        ("cn.gov",),
    )
    jl = machine(
        tmp_path,
        "jl.hub",
        head.format("jl.hub", "吉林省电子公文交换中心", "Jilin hub")
        + CHANNELS
        + org("jl.gov", "province", "cn.gov", channels=BOTH, zh="吉林省人民政府办公厅")
        + org("jl.cc", "prefecture", "jl.gov", channels=GOVNET, zh="长春市人民政府")
        + provincial_entry,
        ("jl.gov", "jl.cc"),
    )
    # 1. the hub keys, each saved by the other operator as the section names it
    hand_over(cn / "hub" / "hub.pub.json", jl / "federation" / "cn.hub.pub.json")
    hand_over(jl / "hub" / "hub.pub.json", cn / "federation" / "jl.hub.pub.json")
    said: list[str] = []

    said.append(build(cn))  # 3.1 the national hub first
    hand_over(cn / "hub" / "directory.bin", jl / "federation" / "cn.hub.directory.bin")
    said.append(build(jl))  # 3.2 the province
    hand_over(jl / "hub" / "directory.bin", cn / "federation" / "jl.hub.directory.bin")
    topology = (cn / "topology.toml").read_text(encoding="utf-8")
    assert "\n# directory = " in topology
    (cn / "topology.toml").write_text(topology.replace("\n# directory = ", "\ndirectory = "))
    said.append(build(cn))  # 3.3 the national hub again
    hand_over(cn / "hub" / "directory.bin", jl / "federation" / "cn.hub.directory.bin")
    said.append(build(jl))  # 3.4 the province again
    return cn, jl, said


def test_the_section_joins_jilin_to_the_national_exchange_as_written(tmp_path: Path) -> None:
    cn, jl, said = joined(tmp_path)

    shown = re.findall(r"`((?:imported \d+ organisations|no directory from) [^`]*)`", section())
    assert len(shown) == 3
    for line in shown:
        assert any(line in output for output in said), line
    assert "capped at the expiry of cn.hub's directory" in said[1]
    pinned = HubPublicKey.load((cn / "hub" / "hub.pub.json").read_bytes(), source="cn")
    national = verify_directory(
        (cn / "hub" / "directory.bin").read_bytes(), pinned.public, now=now_ms(), whole_file=True
    ).directory
    assert [(o.id, o.via) for o in national.orgs] == [
        ("cn.gov", None),
        ("jl.gov", "jl.hub"),
        ("jl.cc", "jl.hub"),
    ]
    pinned = HubPublicKey.load((jl / "hub" / "hub.pub.json").read_bytes(), source="jl")
    provincial = verify_directory(
        (jl / "hub" / "directory.bin").read_bytes(), pinned.public, now=now_ms(), whole_file=True
    ).directory
    assert provincial.ancestors("jl.cc") == ("jl.gov", "cn.gov")
    assert provincial.version == 2


@dataclass
class Hubd:
    """``hubd run`` on one of the machines above, its broker embedded on a free port."""

    etc: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.etc / "hubd.log"

    def configure(self, extra: str = "") -> None:
        (self.etc / "hub.toml").write_text(
            "[hub]\n"
            'directory = "hub/directory.bin"\nkey = "hub/hub.sign.key"\nstate_dir = "state"\n'
            f'[broker]\nenabled = true\nlisten = "127.0.0.1:{self.port}"\n'
            '[metrics]\nlisten = ""\n[logging]\nformat = "json"\n' + extra,
            encoding="utf-8",
        )

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own daemon
                [sys.executable, "-m", "hubd", "run", "--config", str(self.etc / "hub.toml")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_for("hub.ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        found = [json.loads(x) for x in lines if x.startswith("{")]
        return [e for e in found if e.get("event") == name]

    def wait_for(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process is not None
            assert self.process.poll() is None or name == "hub.stopped", self.log.read_text()
            if len(found := self.events(name)) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {count} {name} in {self.log}:\n{self.log.read_text()}")

    def status(self) -> str:
        """The section's ``hubctl status`` command, run on this machine."""
        (line,) = set(re.findall(r"`(hubctl status --config [^`]+)`", step("4. ")))
        argv = shlex.split(line.replace(ETC, str(self.etc)))
        return str(ok(hubctl(*argv[1:])).stdout)


def shape(line: str) -> list[str]:
    """A table line's cells as words, with the durations left out (``12s``, ``2m10s``)."""
    return [w for w in line.split() if not re.fullmatch(r"(\d+[dhms])+,?", w)]


def test_the_uplink_connects_jilin_to_the_national_hub_and_status_shows_it(
    tmp_path: Path,
) -> None:
    cn, jl, _ = joined(tmp_path)
    national, jilin = Hubd(cn), Hubd(jl)
    (upstream,) = re.findall(r"```toml\n(.*?)```", step("4. "), re.DOTALL)
    channels = re.findall(r"(?m)^\[upstream\.channels\.(\w+)\]$", upstream)
    assert channels == ["govnet", "classified"]  # those of the [[hubs]] entry of step 2
    for made, kind in ((topics.up, "up"), (topics.down, "down"), (topics.presence, "presence")):
        shown = f"`{made('govnet', 'jl.hub')}`".replace("govnet", "CHANNEL")  # its ACL lines
        assert shown in step("4. "), kind
    national.configure()  # nothing of the uplink at the national hub
    jilin.configure(re.sub(r"mqtt://[^\"]+", f"mqtt://127.0.0.1:{national.port}", upstream))
    try:
        national.start()
        jilin.start()
        connected = jilin.wait_for("uplink.connected", 2)
        assert sorted(e["channel"] for e in connected) == sorted(channels)
        assert {e["upstream"] for e in connected} == {"cn.hub"}

        console = step("4. ").split("```console\n", 1)[1].split("```", 1)[0]
        title, head, row = [x.strip() for x in console.splitlines() if x.strip()]
        deadline = time.monotonic() + 20
        while "classified online" not in (said := national.status()):
            assert time.monotonic() < deadline, said  # the member's presence, a moment later
            time.sleep(0.2)
        lines = said.splitlines()
        assert title in lines
        assert shape(head) in [shape(x) for x in lines]
        assert shape(row) in [shape(x) for x in lines], said
        spokes = said[said.index("\nspokes:") :]
        assert "cn.gov" in spokes
        assert "jl.gov" not in spokes  # Jilin's spoke, counted on jl.hub's row
        here = jilin.status()
        assert re.search(
            r"(?m)^cn\.hub \S+ +upstream +everyone else +govnet,classified +govnet online", here
        ), here

        jilin.stop()  # the member stops: it says so, and the national hub sees it go
        assert sorted(e["channel"] for e in jilin.events("uplink.closed")) == sorted(channels)
        assert jilin.events("uplink.lost") == []
        deadline = time.monotonic() + 20
        while "classified offline for" not in (said := national.status()):
            assert time.monotonic() < deadline, said
            time.sleep(0.2)
    finally:
        jilin.stop()
        national.stop()


def test_the_refusals_table_quotes_what_the_build_says() -> None:
    table = section().split("### Refusals and what to do", 1)[1]
    source = FEDERATION.read_text(encoding="utf-8")
    quoted = [
        fragment
        for row in table.splitlines()
        if row.startswith("| `")
        for fragment in re.findall(r"`([^`]+)`", row.split(" | ")[0])
        if re.search(r"[\u4e00-\u9fff]", fragment)
    ]
    assert len(quoted) >= 10
    for fragment in quoted:
        for piece in re.split(r"\.\.\.| C ", fragment):
            assert piece.strip() in source, fragment
