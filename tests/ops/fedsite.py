"""Hub operators of a federation, each with a folder of their own, for the federation build
tests: the national hub (``cn.hub``, organisation ``cn.gov``, members ``jl.hub`` serving
``jl`` and ``ln.hub`` serving ``ln``) and the provinces (Jilin, Liaoning), each a member
with the national hub as its upstream.

Each site holds its topology, its organisations' public key files (made by ``spoke
keygen``), its hub key pair (``hubctl keys init``), a ``federation/`` folder where the
other operators' ``hub.pub.json`` and signed directories are put as they are handed over,
and the directory it builds. Builds run as the operator types them (typer's runner); a
build at another time than now calls the function behind the command.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from typer.testing import Result

from hubd.provision.directory import Built, build_and_sign
from runtime.clock import now_ms
from schemas.directory import Directory, verify_directory
from schemas.keys import HubPublicKey, PublicKeys
from tests.test_key_tools import hubctl, keygen, ok

CHANNELS = """
[[channels]]
id = "govnet"
name = "政务专网"
ceiling = "INTERNAL"

[[channels]]
id = "classified"
name = "涉密通道"
ceiling = "SECRET"
"""


def org(org_id: str, level: str, parent: str | None, *, channels: str, zh: str) -> str:
    parent_line = f'parent = "{parent}"\n' if parent else ""
    clearance = "SECRET" if "classified" in channels else "INTERNAL"
    return (
        f'\n[[orgs]]\nid = "{org_id}"\nname_zh = "{zh}"\nname_en = "{org_id} office"\n'
        f'level = "{level}"\n{parent_line}clearance = "{clearance}"\nchannels = {channels}\n'
    )


BOTH = '["govnet", "classified"]'
GOVNET = '["govnet"]'


def link(
    hub_id: str,
    role: str,
    *,
    prefixes: tuple[str, ...] = (),
    channels: str = BOTH,
    directory: bool = True,
) -> str:
    """A ``[[hubs]]`` entry naming the files as the tests hand them over."""
    lines = [
        "\n[[hubs]]",
        f'id = "{hub_id}"',
        f'name_zh = "{hub_id} 交换中心"',
        f'name_en = "{hub_id} exchange hub"',
        f'role = "{role}"',
    ]
    if prefixes:
        lines.append("prefixes = [" + ", ".join(f'"{p}"' for p in prefixes) + "]")
    lines += [f"channels = {channels}", f'key = "federation/{hub_id}.pub.json"']
    if directory:
        lines.append(f'directory = "federation/{hub_id}.directory.bin"')
    return "\n".join(lines) + "\n"


def national(
    *,
    members_directories: bool = True,
    jl: tuple[str, ...] = ("jl",),
    members: tuple[str, ...] = ("jl", "ln"),
) -> str:
    """The national topology; without the members' directories on its first build."""
    prefixes = {"jl": jl, "ln": ("ln",)}
    return (
        '[hub]\nid = "cn.hub"\nname_zh = "国家电子公文交换中心"\n'
        'name_en = "National document exchange hub"\n'
        + CHANNELS
        + org("cn.gov", "national", None, channels=BOTH, zh="国务院办公厅")
        + "".join(
            link(f"{m}.hub", "member", prefixes=prefixes[m], directory=members_directories)
            for m in members
        )
    )


def province(code: str, name: str, *, extra: str = "", channels: str = CHANNELS) -> str:
    """A province (``jl`` or ``ln``) whose upstream is the national hub."""
    return (
        f'[hub]\nid = "{code}.hub"\nname_zh = "{name}电子公文交换中心"\n'
        f'name_en = "{code} provincial hub"\n'
        + channels
        + org(f"{code}.gov", "province", "cn.gov", channels=BOTH, zh=f"{name}人民政府办公厅")
        + org(f"{code}.cc", "prefecture", f"{code}.gov", channels=GOVNET, zh=f"{name}甲市")
        + extra
        + link("cn.hub", "upstream")
    )


def prefecture(*, upstream_channels: str = GOVNET) -> str:
    """Yanbian's own hub, a member of Jilin's (a hub under a hub under the national one)."""
    return (
        '[hub]\nid = "yb.hub"\nname_zh = "延边州电子公文交换中心"\nname_en = "Yanbian hub"\n'
        + CHANNELS
        + org("jl.yb", "prefecture", "jl.gov", channels=GOVNET, zh="延边州人民政府")
        + org("jl.yb.yj", "county", "jl.yb", channels=GOVNET, zh="延吉市人民政府")
        + link("jl.hub", "upstream", channels=upstream_channels)
    )


@dataclass
class HubSite:
    """One hub operator's folder."""

    root: Path
    hub_id: str

    @classmethod
    def make(cls, root: Path, hub_id: str, topology: str, orgs: tuple[str, ...]) -> HubSite:
        site = cls(root, hub_id)
        site.keys.mkdir(parents=True)
        site.write(topology)
        for org_id in orgs:
            site.add_org(org_id)
        ok(hubctl("keys", "init", "--out", str(site.hub)))
        (root / "federation").mkdir()
        return site

    def add_org(self, org_id: str) -> PublicKeys:
        """The organisation runs 'spoke keygen' and hands its public key file over."""
        ok(keygen(org_id, self.root / "spokes" / org_id))
        pub = self.root / "spokes" / org_id / f"{org_id}.pub.json"
        shutil.copyfile(pub, self.keys / pub.name)
        return PublicKeys.load(pub.read_bytes(), source=str(pub))

    @property
    def topology(self) -> Path:
        return self.root / "topology.toml"

    @property
    def keys(self) -> Path:
        return self.root / "orgs"

    @property
    def hub(self) -> Path:
        return self.root / "hub"

    @property
    def out(self) -> Path:
        return self.root / "directory.bin"

    @property
    def imports(self) -> Path:
        return self.root / "imports.json"

    def write(self, topology: str) -> None:
        self.topology.write_text(topology, encoding="utf-8")

    def pinned(self) -> HubPublicKey:
        path = self.hub / "hub.pub.json"
        return HubPublicKey.load(path.read_bytes(), source=str(path))

    def hand_key_to(self, other: HubSite) -> None:
        """This operator's hub.pub.json, handed to the other, where its [[hubs]] key says."""
        shutil.copyfile(self.hub / "hub.pub.json", other.received_key(self.hub_id))

    def send_directory_to(self, other: HubSite) -> None:
        """This hub's signed directory, handed to the other, where its [[hubs]] says."""
        shutil.copyfile(self.out, other.received_directory(self.hub_id))

    def received_key(self, hub_id: str) -> Path:
        return self.root / "federation" / f"{hub_id}.pub.json"

    def received_directory(self, hub_id: str) -> Path:
        return self.root / "federation" / f"{hub_id}.directory.bin"

    def paths(self) -> list[str]:
        return [
            "--topology",
            str(self.topology),
            "--keys",
            str(self.keys),
            "--hub-key",
            str(self.hub / "hub.sign.key"),
            "--out",
            str(self.out),
        ]

    def try_build(self, *extra: str) -> Result:
        return hubctl("directory", "build", *self.paths(), *extra)

    def build(self, *extra: str) -> Result:
        return ok(self.try_build(*extra))

    def build_at(self, now: int, *, valid_days: int = 30) -> Built:
        """The build at another time than now (the function 'directory build' calls)."""
        return build_and_sign(
            topology_path=self.topology,
            keys_dir=self.keys,
            hub_key_path=self.hub / "hub.sign.key",
            out=self.out,
            now=now,
            valid_days=valid_days,
            version=None,
            revoke=[],
        )

    def read(self, *, now: int | None = None) -> Directory:
        frame = self.out.read_bytes()
        at = now_ms() if now is None else now
        return verify_directory(frame, self.pinned().public, now=at, whole_file=True).directory


@dataclass
class Federation:
    """The national hub and two provinces, keys exchanged, nothing built yet."""

    cn: HubSite
    jl: HubSite
    ln: HubSite

    @classmethod
    def make(cls, root: Path) -> Federation:
        cn = HubSite.make(root / "cn", "cn.hub", national(members_directories=False), ("cn.gov",))
        jl = HubSite.make(root / "jl", "jl.hub", province("jl", "吉林省"), ("jl.gov", "jl.cc"))
        ln = HubSite.make(root / "ln", "ln.hub", province("ln", "辽宁省"), ("ln.gov", "ln.cc"))
        for member in (jl, ln):
            member.hand_key_to(cn)
            cn.hand_key_to(member)
        return cls(cn, jl, ln)

    def bootstrap(self) -> None:
        """The documented order: the national hub first (without its members' directories),
        each province with the national directory, the national hub importing theirs, then
        each province again to learn the others."""
        self.cn.build()
        for member in (self.jl, self.ln):
            self.cn.send_directory_to(member)
            member.build()
            member.send_directory_to(self.cn)
        self.cn.write(national())
        self.cn.build()
        for member in (self.jl, self.ln):
            self.cn.send_directory_to(member)
            member.build()
