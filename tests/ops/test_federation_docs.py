"""docs/operations.md, "Joining a province to the national exchange", run as written: its
``[[hubs]]`` entries on both sides, its build command on each hub's folder (the documented
``/etc/govxchg`` layout under tmp_path), in its bootstrap order, with the lines it shows;
and its table of refusals names what the build says."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from runtime.clock import now_ms
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


def toml_blocks() -> tuple[str, str]:
    """The national hub's entry for Jilin, and Jilin's for the national hub."""
    national, provincial = re.findall(r"```toml\n(.*?)```", section(), re.DOTALL)
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


def test_the_section_joins_jilin_to_the_national_exchange_as_written(tmp_path: Path) -> None:
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
