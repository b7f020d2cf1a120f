"""``make demo-federation``: hubs under hubs on one machine, built the way the operators build them.

In a scratch folder (``demo-federation-run/``): three hub operators, each with a folder of
their own, the national exchange (``cn.hub``) and two provinces, Jilin (``jl.hub``, its
topology derived from config/topology.toml) and Liaoning (``ln.hub``, a small one). Each
makes its hub key (``hubctl keys init``), takes its organisations' public keys (made with
``spoke keygen``), exchanges hub keys with the other level and builds its directory with
``hubctl directory build`` in the documented order (docs/operations.md, "Joining a province
to the national exchange"); only the organisations whose spokes run here make keys, the
others of the topologies are listed awaiting keys. Then three ``hubd run``, each on its own
embedded broker (a free port) and SQLite, the provinces connected to the national hub by
their uplinks (``[upstream]``), and five spokes as separate processes: 国务院办公厅 at the
national hub, 吉林省人民政府办公厅 and 农安县 at Jilin's, 辽宁省人民政府办公厅 and 康平县 at
Liaoning's.

Documents are dropped into outboxes as an integrator would: a 机密 notice from the State
Council to Jilin's general office on the classified link; a 函 from 农安县 to 康平县 across
three hubs, delivered and signed for (签收); and a 秘密 letter from Jilin's general office to
Liaoning's, which Jilin's hub accepts (its link is classified) and the national hub refuses
(Liaoning's link carries the government network only). The demo watches the folders and
prints what happened, with ``hubctl trace`` of the 函 on two hubs; ``--keep`` leaves it
running to explore.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.ports import free_port
from schemas.display import table
from spoke.demokit import Folders, Row, Status, T, meta, shown, spoke_toml, wait
from spoke.refusals import hub_reason_zh

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FOLDER = Path("demo-federation-run")
NATIONAL, JILIN, LIAONING = "cn.hub", "jl.hub", "ln.hub"
HUBS = {
    NATIONAL: "国家电子公文交换中心",
    JILIN: "吉林省电子公文交换中心",
    LIAONING: "辽宁省电子公文交换中心",
}
# the spokes the demo runs, at their hub
SPOKES = {
    "cn.gov": (NATIONAL, "国务院办公厅"),
    "jl.gov": (JILIN, "吉林省政府办公厅"),
    "jl.cc.nongan": (JILIN, "农安县"),
    "ln.gov": (LIAONING, "辽宁省政府办公厅"),
    "ln.sy.kangping": (LIAONING, "康平县"),
}
# the channels of each province's link to the national hub: Liaoning's carries no 秘密
LINKS = {JILIN: ("govnet", "classified"), LIAONING: ("govnet",)}

CHANNELS = """
[[channels]]
id = "govnet"
name = "政务专网 government private network"
ceiling = "INTERNAL"

[[channels]]
id = "classified"
name = "涉密通道 classified channel"
ceiling = "SECRET"
"""

# The national exchange: the State Council's General Office and the provinces' hubs as its
# members. The members' directory lines stay commented out until they have sent them
# (the first build, step 3.1 of the guide).
NATIONAL_TOPOLOGY = (
    """# The national exchange (make demo-federation): its own organisation and its members.
[hub]
id = "cn.hub"
name_zh = "国家电子公文交换中心"
name_en = "National document exchange hub"
"""
    + CHANNELS
    + """
[[orgs]]
id = "cn.gov"
name_zh = "国务院办公厅"
name_en = "General Office of the State Council"
level = "national"
clearance = "机密"
channels = ["govnet", "classified"]

[[hubs]]
id = "jl.hub"
name_zh = "吉林省电子公文交换中心"
name_en = "Jilin provincial document exchange hub"
role = "member"
prefixes = ["jl"]
channels = ["govnet", "classified"]
key = "federation/jl.hub.pub.json"
# directory = "federation/jl.hub.directory.bin"

[[hubs]]
id = "ln.hub"
name_zh = "辽宁省电子公文交换中心"
name_en = "Liaoning provincial document exchange hub"
role = "member"
prefixes = ["ln"]
channels = ["govnet"]                # the government network only: no 秘密 or 机密
key = "federation/ln.hub.pub.json"
# directory = "federation/ln.hub.directory.bin"
"""
)

# A province's entry for the national hub, on its link's channels.
UPSTREAM_ENTRY = """
[[hubs]]
id = "cn.hub"
name_zh = "国家电子公文交换中心"
name_en = "National document exchange hub"
role = "upstream"
channels = {channels}
key = "federation/cn.hub.pub.json"
directory = "federation/cn.hub.directory.bin"
"""

LIAONING_TOPOLOGY = (
    """# Liaoning's exchange (make demo-federation): a small one, a member of the national hub.
[hub]
id = "ln.hub"
name_zh = "辽宁省电子公文交换中心"
name_en = "Liaoning provincial document exchange hub"
"""
    + CHANNELS
    + """
[[orgs]]
id = "ln.gov"
name_zh = "辽宁省人民政府办公厅"
name_en = "General Office of the Liaoning Provincial People's Government"
level = "province"
parent = "cn.gov"                    # from the national directory
code = "210000"
clearance = "机密"
channels = ["govnet", "classified"]

[[orgs]]
id = "ln.sy"
name_zh = "沈阳市人民政府"
name_en = "Shenyang Municipal People's Government"
level = "prefecture"
parent = "ln.gov"
code = "210100"
clearance = "内部"
channels = ["govnet"]

[[orgs]]
id = "ln.sy.kangping"
name_zh = "康平县人民政府"
name_en = "Kangping County People's Government"
level = "county"
parent = "ln.sy"
code = "210123"
clearance = "内部"
channels = ["govnet"]
"""
    + UPSTREAM_ENTRY.format(channels='["govnet"]')
)

SECRET_NOTICE = meta(
    主送="jl.gov",
    密级="机密★1年",
    紧急程度="特急",
    文种="通知",
    标题="（涉密标题不显示）",
    发文字号="国办发〔2026〕7号",
)
LETTER = meta(
    主送="ln.sy.kangping",
    密级="内部",
    文种="函",
    标题="关于商请交流秋粮收购经验的函",
    发文字号="农政函〔2026〕8号",
)
CONFIDENTIAL_LETTER = meta(
    主送="ln.gov",
    密级="秘密★6个月",
    文种="函",
    标题="（涉密标题不显示）",
    发文字号="吉政办函〔2026〕21号",
)


def jilin_topology() -> str:
    """config/topology.toml as a member of the national exchange: without ``cn.gov`` (the
    national directory brings it; jl.gov keeps it as its parent) and with the national hub
    as its upstream on the classified link."""
    source = (REPO / "config" / "topology.toml").read_text(encoding="utf-8")
    kept = [p for p in source.split("\n\n") if not re.search(r'(?m)^id = "cn\.gov"$', p)]
    return (
        "# Derived by make demo-federation from config/topology.toml: Jilin as a member of\n"
        "# the national exchange (cn.gov comes from the national directory).\n"
        + "\n\n".join(kept).rstrip("\n")
        + "\n"
        + UPSTREAM_ENTRY.format(channels='["govnet", "classified"]')
    )


def _wait(what: str, check: Callable[[], T | bool | None], timeout: float = 30.0) -> T:
    return wait(what, check, timeout, f"{FOLDER}/*.log")


class FederationDemo(Folders):
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.ports = {hub: free_port() for hub in HUBS}
        self.metrics = {hub: free_port() for hub in HUBS}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.rows: list[Row] = []
        self.letter_id = ""  # the 函's msg_id
        self.refusal: Status = {}  # ln.gov's entry in the 秘密 letter's status.json
        self.traces: dict[str, str] = {}

    # ------------------------------------------------------------------ the operators

    def hub(self, hub: str) -> Path:
        """A hub operator's folder (/etc/govxchg on a real server)."""
        return self.scratch / hub

    def setup(self) -> None:
        if self.scratch.exists():
            shutil.rmtree(self.scratch)
        topologies = {
            NATIONAL: NATIONAL_TOPOLOGY,
            JILIN: jilin_topology(),
            LIAONING: LIAONING_TOPOLOGY,
        }
        for hub, topology in topologies.items():
            for sub in ("orgs", "federation"):
                (self.hub(hub) / sub).mkdir(parents=True)
            (self.hub(hub) / "topology.toml").write_text(topology, encoding="utf-8")
            self._hub_toml(hub)
        # each hub's key, and each running spoke's keys on its own server, made at once
        self._run_all(
            [("hubctl", "keys", "init", "--config", f"{hub}/hub.toml") for hub in HUBS]
            + [
                ("spoke", "keygen", "--org", org, "--out", f"keys/{org}", "--valid-days", "365")
                for org in SPOKES
            ]
        )
        for org, (hub, _) in SPOKES.items():  # each organisation hands its public key over
            shutil.copyfile(
                self.scratch / "keys" / org / f"{org}.pub.json",
                self.hub(hub) / "orgs" / f"{org}.pub.json",
            )
        for member in LINKS:  # 1. the hub keys, both ways
            self._hand(member, "hub/hub.pub.json", NATIONAL, f"federation/{member}.pub.json")
            self._hand(NATIONAL, "hub/hub.pub.json", member, "federation/cn.hub.pub.json")
        # 3. the builds, in the documented order
        self._build(NATIONAL)  # the national hub first, without its members' directories
        for member in LINKS:
            self._hand(NATIONAL, "hub/directory.bin", member, "federation/cn.hub.directory.bin")
        self._build(*LINKS)  # each province with the national directory
        for member in LINKS:
            self._hand(member, "hub/directory.bin", NATIONAL, f"federation/{member}.directory.bin")
        national = self.hub(NATIONAL) / "topology.toml"
        national.write_text(
            national.read_text(encoding="utf-8").replace("\n# directory = ", "\ndirectory = "),
            encoding="utf-8",
        )
        self._build(NATIONAL)  # the national hub importing the provinces'
        self.start(NATIONAL)  # its operator starts it while the provinces build again
        for member in LINKS:
            self._hand(NATIONAL, "hub/directory.bin", member, "federation/cn.hub.directory.bin")
        self._build(*LINKS)  # each province again, to learn the other
        for org, (hub, _) in SPOKES.items():
            self._spoke_toml(org, hub)
        print(
            "three hub operators: hub keys made and exchanged, 5 organisations' keys handed "
            "over, directories built in the documented order (national, provinces, national, "
            "provinces)"
        )
        for hub, name in HUBS.items():
            print(f"  {hub:7} {name}  broker 127.0.0.1:{self.ports[hub]}")

    def _hub_toml(self, hub: str) -> None:
        lines = [
            "[hub]",
            'topology = "topology.toml"',
            'org_keys = "orgs"',
            'key = "hub/hub.sign.key"',
            'directory = "hub/directory.bin"',
            'state_dir = "state"',
            "",
            "[broker]",
            "enabled = true",
            f'listen = "127.0.0.1:{self.ports[hub]}"',
            "",
            "[delivery]",
            "retry_initial = 5.0",
            "",
            "[metrics]",
            f'listen = "127.0.0.1:{self.metrics[hub]}"',
            "",
            "[logging]",
            'format = "json"',
        ]
        if hub in LINKS:  # the uplink: the national hub's broker for each channel of the link
            lines += ["", "[upstream]"]
            for channel in LINKS[hub]:
                lines += [
                    "",
                    f"[upstream.channels.{channel}]",
                    f'url = "mqtt://127.0.0.1:{self.ports[NATIONAL]}"',
                ]
        (self.hub(hub) / "hub.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _spoke_toml(self, org: str, hub: str) -> None:
        channels = self._channels(hub, org)
        text = spoke_toml(
            org,
            keys="keys",
            hub_key=f"{hub}/hub/hub.pub.json",
            port=self.ports[hub],
            channels=channels,
        )
        (self.scratch / f"{org}.toml").write_text(text, encoding="utf-8")

    def _channels(self, hub: str, org: str) -> list[str]:
        """The organisation's channels, as its hub's topology lists them."""
        text = (self.hub(hub) / "topology.toml").read_text(encoding="utf-8")
        entry = next(o for o in tomllib.loads(text)["orgs"] if o["id"] == org)
        return [str(c) for c in entry["channels"]]

    def _hand(self, source: str, path: str, target: str, to: str) -> None:
        """One operator's file, saved by the other where its [[hubs]] entry names it."""
        shutil.copyfile(self.hub(source) / path, self.hub(target) / to)

    def _build(self, *hubs: str) -> None:
        """``hubctl directory build`` on each of ``hubs`` (different operators: at once)."""
        self._run_all([("hubctl", "directory", "build", "--config", f"{h}/hub.toml") for h in hubs])

    def _run_all(self, commands: list[tuple[str, ...]]) -> list[str]:
        """Our own console scripts, started together; their output once all have ended."""
        started = [
            subprocess.Popen(
                [str(BIN / tool), *args],
                cwd=self.scratch,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for tool, *args in commands
        ]
        outputs = []
        for command, proc in zip(commands, started, strict=True):
            out, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise SystemExit(f"demo-federation: {' '.join(command)} failed:\n{out}{err}")
            outputs.append(out)
        return outputs

    # ------------------------------------------------------------------ processes

    def start(self, name: str) -> None:
        if name in HUBS:
            command = [sys.executable, "-m", "hubd", "run", "--config", f"{name}/hub.toml"]
        else:
            command = [sys.executable, "-m", "spoke", "run", "--config", f"{name}.toml"]
        with (self.scratch / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                command, cwd=self.scratch, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)

    def events(self, name: str) -> list[dict[str, Any]]:
        path = self.scratch / f"{name}.log"
        if not path.exists():
            return []
        found = []
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line still being written
        return found

    def _logged(self, name: str, event: str, count: int = 1) -> bool:
        return sum(1 for e in self.events(name) if e.get("event") == event) >= count

    def _exited(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return name
        return None

    # ------------------------------------------------------------------ folders

    def answered(self, org: str, name: str, recipient: str, *statuses: str) -> Status | None:
        """The sender's status.json once ``recipient`` is in one of ``statuses``; a drop
        the sender's spoke or hub refused ends the demo with its reason."""
        refused = self.failed(org, name)
        if refused is not None:
            raise SystemExit(f"demo-federation: {org} could not send {name}: {refused}")
        data = self.sent(org, name)
        if data is None:
            return None
        got = data["recipients"].get(recipient, {}).get("status")
        return data if got in statuses else None

    def _in_inbox(self, org: str, msg_id: str) -> Path | None:
        path = self.folder(org, "inbox") / msg_id
        return path if (path / "meta.json").exists() else None

    # ------------------------------------------------------------------ the story

    def run(self) -> None:
        started = time.monotonic()
        self.setup()
        _wait("the hubs and spokes to start", self._bring_up, 60)
        for member, channels in LINKS.items():
            uplinked = functools.partial(self._uplinked, member, len(channels))
            _wait(f"{member}'s uplink", uplinked)
        for org in SPOKES:
            _wait(f"{org} to connect", functools.partial(self._logged, org, "directory.updated"))
        print(
            "the national hub and two provincial hubs running, each province connected to the "
            f"national hub's broker by its uplink; {len(SPOKES)} spokes "
            f"({', '.join(name for _, name in SPOKES.values())})\n"
        )
        self._secret_notice()
        self._letter()
        self._refused()
        traced = (JILIN, NATIONAL)
        outputs = self._run_all(
            [("hubctl", "trace", self.letter_id, "--config", f"{h}/hub.toml") for h in traced]
        )
        self.traces = dict(zip(traced, outputs, strict=True))
        print(
            table(
                ("document", "route", "labels", "channel", "outcome", "receipts", "time"),
                [
                    (r.document, r.route, r.labels, r.channel, r.outcome, r.receipts, r.time)
                    for r in self.rows
                ],
            )
        )
        self._print_refusal()
        for hub in (JILIN, NATIONAL):
            config = shown(self.hub(hub) / "hub.toml")
            print(f"\n$ hubctl trace {self.letter_id} --config {config}   (the 函 at {hub})")
            print("  " + self.traces[hub].rstrip("\n").replace("\n", "\n  "))
        print(
            f"\nall of it in {time.monotonic() - started:.1f} s; the folders are in {self.scratch}/"
        )

    def _bring_up(self) -> bool:
        """Start each process once the hub it needs is ready: the provinces' hubs once the
        national hub is (their uplinks connect to its broker), each spoke once its hub is.
        True when everything is started."""
        if (gone := self._exited()) is not None:
            raise SystemExit(f"demo-federation: {gone} stopped; see {FOLDER}/{gone}.log")
        needs = dict.fromkeys(LINKS, NATIONAL) | {o: h for o, (h, _) in SPOKES.items()}
        for name, hub in needs.items():
            if name not in self.procs and hub in self.procs and self._logged(hub, "hub.ready"):
                self.start(name)
        return all(name in self.procs for name in needs)

    def _uplinked(self, member: str, channels: int) -> bool:
        if (gone := self._exited()) is not None:
            raise SystemExit(f"demo-federation: {gone} stopped; see {FOLDER}/{gone}.log")
        return self._logged(member, "uplink.connected", channels)

    def _secret_notice(self) -> None:
        """机密, from the State Council down to Jilin's general office: the only channel
        that carries it is the classified one, at both hubs and on the link between them."""
        t = self.drop("cn.gov", "涉密通知.txt", "吉林省人民政府办公厅：（机密内容）", SECRET_NOTICE)
        data = _wait(
            "the 机密 notice",
            lambda: self.answered("cn.gov", "涉密通知.txt", "jl.gov", "DELIVERED", "SIGNED_FOR"),
        )
        _wait("the notice in jl.gov's inbox", lambda: self._in_inbox("jl.gov", data["msg_id"]))
        copy = data["recipients"]["jl.gov"].get("copy_number", "-")
        self.rows.append(
            Row(
                "机密 通知",
                "国务院办公厅 -> 吉林省政府办公厅",
                "SECRET 机密★1年 特急",
                str(data["channel"]),
                "delivered (cn.hub -> jl.hub)",
                f"ACCEPTED; jl.gov: DELIVERED, 份号 {copy}",
                f"{(time.monotonic() - t) * 1000:.0f} ms",
            )
        )

    def _letter(self) -> None:
        """函, from a county of Jilin to a county of Liaoning: lateral across the whole tree,
        through three hubs; 康平县 signs for it (spoke sign-for) and both receipts come back."""
        t = self.drop(
            "jl.cc.nongan",
            "商洽函.txt",
            "康平县人民政府：我县拟赴贵县学习秋粮收购工作经验，请予支持。",
            LETTER,
        )
        data = _wait(
            "the 函's DELIVERED",
            lambda: self.answered(
                "jl.cc.nongan", "商洽函.txt", "ln.sy.kangping", "DELIVERED", "SIGNED_FOR"
            ),
        )
        delivered_ms = (time.monotonic() - t) * 1000
        self.letter_id = str(data["msg_id"])
        _wait("the 函 in 康平县's inbox", lambda: self._in_inbox("ln.sy.kangping", self.letter_id))
        (self.folder("ln.sy.kangping", "signfor") / self.letter_id).touch()  # 签收, as a file
        signed = _wait(
            "the 函's 签收",
            lambda: self.answered("jl.cc.nongan", "商洽函.txt", "ln.sy.kangping", "SIGNED_FOR"),
        )
        self.rows.append(
            Row(
                "函",
                "农安县 -> 康平县 (jl.hub -> cn.hub -> ln.hub)",
                "INTERNAL 内部 平件",
                str(signed["channel"]),
                "delivered, signed for (签收)",
                f"ACCEPTED; DELIVERED in {delivered_ms:.0f} ms; ln.sy.kangping: SIGNED_FOR",
                f"{(time.monotonic() - t) * 1000:.0f} ms",
            )
        )

    def _refused(self) -> None:
        """秘密, from Jilin's general office to Liaoning's: Jilin's hub accepts it (ln.gov is
        cleared, and the link to the national hub is classified), the national hub refuses
        it (Liaoning's link is the government network only) and its refusal comes back."""
        t = self.drop(
            "jl.gov", "涉密函.txt", "辽宁省人民政府办公厅：（秘密内容）", CONFIDENTIAL_LETTER
        )
        data = _wait(
            "the national hub's refusal",
            lambda: self.answered("jl.gov", "涉密函.txt", "ln.gov", "REFUSED"),
        )
        self.refusal = data["recipients"]["ln.gov"]
        self.rows.append(
            Row(
                "秘密 函",
                "吉林省政府办公厅 -> 辽宁省政府办公厅",
                "CONFIDENTIAL 秘密★6个月",
                str(data["channel"]),
                f"refused at cn.hub ({self.refusal.get('reason')})",
                f"ACCEPTED by jl.hub; ln.gov: {self.refusal['status']}; see below",
                f"{(time.monotonic() - t) * 1000:.0f} ms",
            )
        )

    def _print_refusal(self) -> None:
        reason = str(self.refusal.get("reason"))
        what, todo = hub_reason_zh(reason, retriable=False)
        print(
            "\n秘密函被国家交换中心拒收：吉林省交换中心接收后经涉密链路转交，但辽宁省交换中心"
            f"与国家交换中心之间只有政务专网。原因：{what}（{reason}）。处理办法：{todo}"
        )
        print(
            "why the 秘密 letter was refused: Jilin's hub accepted it and handed it on over its "
            "classified link; the national hub refused it, as Liaoning's link carries the "
            "government network only. jl.gov's status.json says, for ln.gov:"
        )
        print(f"  status: {self.refusal.get('status')}, reason: {reason}")
        print(f"  detail: {self.refusal.get('detail')}")

    # ------------------------------------------------------------------ afterwards

    def next_steps(self, *, running: bool) -> list[str]:
        """Where to look next: commands that work as printed, from the current folder."""
        hubctl, spoke = shown(BIN / "hubctl"), shown(BIN / "spoke")

        def hub_config(hub: str) -> str:
            return shown(self.hub(hub) / "hub.toml")

        def spoke_config(org: str) -> str:
            return shown(self.scratch / f"{org}.toml")

        lines = [
            f"{hubctl} status --config {hub_config(NATIONAL)}",
            (
                f"{hubctl} trace {self.letter_id} --config {hub_config(JILIN)} "
                f"--follow {hub_config(NATIONAL)} --follow {hub_config(LIAONING)}"
            ),
            f"{spoke} status {self.letter_id} --config {spoke_config('jl.cc.nongan')}",
            f"{spoke} status --config {spoke_config('jl.gov')}",
        ]
        if running:
            lines.append(f"http://127.0.0.1:{self.metrics[NATIONAL]}/")
        return lines

    def print_next_steps(self, *, running: bool) -> None:
        what = [
            "the national hub at a glance: its spoke, its member hubs, queues, the directory",
            "the 函's whole way: at Jilin's hub, then the national hub's and Liaoning's",
            "the 函 as 农安县 sees it: delivered and signed for at 康平县",
            "what 吉林省政府办公厅 sent: the 秘密 letter refused beyond its hub",
            "the national hub's status page (open it in a browser while the hub runs)",
        ]
        state = "" if running else " (the hubs have stopped: they read their stores)"
        print(f"\nwhere to look next{state}:")
        for line, why in zip(self.next_steps(running=running), what, strict=False):
            print(f"  {line}\n      {why}")
        if not running:
            print(
                "  make demo-federation DEMO_ARGS=--keep leaves the hubs running, with their "
                "status pages"
            )

    def shutdown(self) -> None:
        for name in [n for n in self.procs if n not in HUBS]:
            self.stop(name)
        for hub in (*LINKS, NATIONAL):
            self.stop(hub)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the hubs and spokes running")
    parser.add_argument("--folder", type=Path, default=FOLDER, help="scratch folder")
    args = parser.parse_args(argv)
    demo = FederationDemo(args.folder.resolve())
    try:
        demo.run()
    except BaseException:
        demo.shutdown()
        raise
    if args.keep:
        demo.print_next_steps(running=True)
        print(f"\nstill running (--keep): drop files into {args.folder}/<org>/outbox/;")
        print(f"stop with: kill {' '.join(str(p.pid) for p in demo.procs.values())}")
        return
    demo.shutdown()
    demo.print_next_steps(running=False)
    sys.exit(0)


if __name__ == "__main__":
    main()
