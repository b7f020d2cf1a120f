"""``make demo``: the hub and five spokes on one machine, and documents that show the mission.

In a scratch folder (``demo-run/``): keys for every organisation of the Jilin topology, a
signed directory, the hub on its embedded broker (a free port) and SQLite, and the spokes
of 国务院办公厅, 吉林省人民政府办公厅, 长春市, 农安县 and 卫生厅 as separate processes. Documents
are dropped into outboxes exactly as an integrator would (one of them, a 请示 addressed to two
superiors, breaks the document rules and is refused), and the demo watches the
folders (sent/, failed/, inbox/) to print what happened. Everything stops at the end;
``--keep`` leaves it running to explore.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.clock import now_ms
from runtime.ports import free_port
from schemas.directory import verify_directory
from schemas.display import table
from schemas.keys import HubPublicKey
from schemas.topology import parse_topology
from spoke.demokit import Folders, Row, Status, T, meta, shown, spoke_toml, wait
from spoke.keygen import generate_org_keys

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SPOKES = {
    "cn.gov": "国务院办公厅",
    "jl.gov": "吉林省人民政府办公厅",
    "jl.cc": "长春市",
    "jl.cc.nongan": "农安县",
    "jl.dept.health": "卫生厅",
}
BACKLOG = 200  # routine documents queued for 卫生厅 while it is offline


NOTICE = meta(
    主送="@prefectures",
    密级="内部",
    文种="通知",
    标题="关于做好今冬明春供暖保障工作的通知",
    发文字号="吉政办发〔2026〕12号",
)
REPORT = meta(
    to="jl.cc",
    classification="INTERNAL",
    precedence="加急",
    doc_type="报告",
    title="关于秋粮收购情况的报告",
    signatory="王某",  # an upward document names its 签发人 (rule upward_signatory)
    doc_number="农政报〔2026〕5号",
)
SECRET_REPORT = meta(
    主送="cn.gov",
    密级="机密★1年",
    紧急程度="特急",
    文种="报告",
    标题="（涉密标题不显示）",
    签发人="李某",
    发文字号="吉政报〔2026〕1号",
)
# Two primary recipients: the document rule request_recipient refuses it at the spoke.
REQUEST = meta(
    主送="jl.gov, cn.gov",
    密级="内部",
    文种="请示",
    标题="关于申请防汛专项资金的请示",
    签发人="张某",
    发文字号="长府请〔2026〕3号",
)
# The emergency command the demo's hub runs: appends the JSON it is handed to alarms.jsonl.
ALARM_COMMAND = [
    sys.executable,
    "-c",
    "import sys; open('alarms.jsonl', 'ab').write(sys.stdin.buffer.read() + b'\\n')",
]
TIMED_NOTICE = meta(
    主送="jl.cc", 密级="内部", 文种="通知", 标题="关于报送冬季安全生产情况的通知", 签收时限="4s"
)
EMERGENCY_FLASH = meta(
    主送="jl.cc, jl.cc.nongan",
    密级="内部",
    紧急程度="特提",
    文种="应急",
    标题="关于立即启动寒潮应急响应的通知",
    签收时限="6s",
)
WRONG_NOTICE = meta(主送="jl.cc", 密级="内部", 文种="通知", 标题="关于调整会议时间的通知（错发）")
EMERGENCY = meta(
    to="jl.dept.health",
    classification="内部",
    precedence="特急",
    doc_type="应急",
    title="关于立即启动应急预案的紧急通知",
)


def _wait(what: str, check: Callable[[], T | bool | None], timeout: float = 20.0) -> T:
    return wait(what, check, timeout, "demo-run/*.log")


class Demo(Folders):
    def __init__(self, scratch: Path, backlog: int = BACKLOG) -> None:
        self.scratch = scratch
        self.backlog = backlog
        self.secret_msg_id = ""
        self.recalled = Path()  # 长春市's recalled/<msg_id>/ of the notice recalled
        self.reminded = Path()  # 长春市's reminders.json of the timed notice
        self.alarms = Path()  # what the emergency command wrote
        self.port = free_port()
        self.metrics_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.rows: list[Row] = []

    # ------------------------------------------------------------------ set up

    def setup(self) -> None:
        if self.scratch.exists():
            shutil.rmtree(self.scratch)
        (self.scratch / "keys").mkdir(parents=True)
        topology = REPO / "config" / "topology.toml"
        orgs = [
            o.id
            for o in parse_topology(topology.read_text(encoding="utf-8"), source=str(topology)).orgs
        ]
        for org in orgs:
            generate_org_keys(
                org, self.scratch / "keys" / "orgs" / org, now=now_ms(), valid_days=365
            )
        hub_keys = self.scratch / "keys" / "hub"
        self._run("hubctl", "keys", "init", "--out", str(hub_keys))
        self._run(
            "hubctl",
            "directory",
            "build",
            "--topology",
            str(topology),
            "--keys",
            str(self.scratch / "keys" / "orgs"),
            "--hub-key",
            str(hub_keys / "hub.sign.key"),
            "--out",
            str(hub_keys / "directory.bin"),
            "--valid-days",
            "30",  # beyond [expiry] directory_warn_days (7): no expiry warning at start
        )
        hub_toml = [
            "[hub]",
            'directory = "keys/hub/directory.bin"',
            'key = "keys/hub/hub.sign.key"',
            'state_dir = "hub-state"',
            "",
            "[broker]",
            "enabled = true",
            f'listen = "127.0.0.1:{self.port}"',
            "",
            "[delivery]",
            "retry_initial = 5.0",
            "",
            "[metrics]",
            f'listen = "127.0.0.1:{self.metrics_port}"',
            "",
            "[deadlines]",  # the demo's deadlines are seconds away: look often
            "look_every = 0.5",
            'remind_before = "2s"',
            # the operator's alarm for an emergency nobody acknowledged: here, a file
            f"emergency_command = {json.dumps(ALARM_COMMAND)}",
            "",
            "[logging]",
            'format = "json"',
        ]
        (self.scratch / "hub.toml").write_text("\n".join(hub_toml) + "\n", encoding="utf-8")
        print(
            f"keys for {len(orgs)} organisations, a signed directory; hub on 127.0.0.1:{self.port}"
            f" (metrics: http://127.0.0.1:{self.metrics_port}/metrics)"
        )
        directory = self._directory()
        for org in SPOKES:
            channels = directory["channels"][org]
            text = spoke_toml(
                org,
                keys="keys/orgs",
                hub_key="keys/hub/hub.pub.json",
                port=self.port,
                channels=channels,
            )
            (self.scratch / f"{org}.toml").write_text(text, encoding="utf-8")

    def _directory(self) -> dict[str, dict[str, list[str]]]:
        hub = self.scratch / "keys" / "hub"
        pinned = HubPublicKey.load((hub / "hub.pub.json").read_bytes(), source="hub.pub.json")
        d = verify_directory(
            (hub / "directory.bin").read_bytes(), pinned.public, now=now_ms()
        ).directory
        return {"channels": {o.id: list(o.channels) for o in d.orgs}}

    def _run(self, tool: str, *args: str) -> str:
        command = [str(BIN / tool), *args]  # our own console scripts
        done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=self.scratch)
        return done.stdout

    def start(self, name: str) -> None:
        if name == "hub":
            command = [sys.executable, "-m", "hubd", "run", "--config", "hub.toml"]
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

    def _logged(self, name: str, event: str) -> bool:
        path = self.scratch / f"{name}.log"
        return path.exists() and f'"event": "{event}"' in path.read_text(errors="replace")

    # ------------------------------------------------------------------ helpers

    def delivered(self, org: str, name: str, recipient: str, *, status: str = "") -> Status | None:
        """The sender's status.json once ``recipient`` has confirmed (or says ``status``)."""
        data = self.sent(org, name)
        if data is None:
            return None
        got = data["recipients"].get(recipient, {}).get("status")
        wanted = {status} if status else {"DELIVERED", "SIGNED_FOR"}
        return data if got in wanted else None

    # ------------------------------------------------------------------ the story

    def run(self) -> None:
        started = time.monotonic()
        self.setup()
        self.start("hub")
        _wait("the hub", lambda: self._logged("hub", "hub.ready"))
        for org in SPOKES:
            self.start(org)
        for org in SPOKES:
            _wait(f"{org} to connect", functools.partial(self._logged, org, "directory.updated"))
        print(f"hub and {len(SPOKES)} spokes running ({', '.join(SPOKES.values())})\n")

        t = self.drop(
            "jl.gov", "供暖通知.txt", "各市（州）人民政府：请做好今冬明春供暖保障工作。", NOTICE
        )
        data = _wait("the notice", lambda: self.delivered("jl.gov", "供暖通知.txt", "jl.cc"))
        self._row(
            "通知",
            "吉林省政府办公厅 -> @prefectures (9)",
            "INTERNAL 内部 平件",
            data,
            recipient="jl.cc",
            t0=t,
        )

        self._recall()
        self._reminder()
        self._emergency()

        t = self.drop(
            "jl.cc.nongan",
            "秋粮收购报告.txt",
            "长春市人民政府：现将我县秋粮收购情况报告如下。",
            REPORT,
        )
        data = _wait(
            "the report", lambda: self.delivered("jl.cc.nongan", "秋粮收购报告.txt", "jl.cc")
        )
        self._row("报告", "农安县 -> 长春市", "INTERNAL 内部 加急", data, recipient="jl.cc", t0=t)

        t = self.drop("jl.gov", "涉密报告.txt", "机密内容", SECRET_REPORT)
        data = _wait(
            "the SECRET report", lambda: self.delivered("jl.gov", "涉密报告.txt", "cn.gov")
        )
        msg_id = self.secret_msg_id = str(data["msg_id"])
        (self.folder("cn.gov", "signfor") / msg_id).touch()  # 签收 by the file convention
        signed = _wait(
            "SIGNED_FOR",
            lambda: self.delivered("jl.gov", "涉密报告.txt", "cn.gov", status="SIGNED_FOR"),
        )
        self._row(
            "机密 报告",
            "吉林省政府办公厅 -> 国务院办公厅",
            "SECRET 机密★1年 特急",
            signed,
            recipient="cn.gov",
            t0=t,
        )

        self.drop(
            "jl.gov", "涉密报告-长春.txt", "机密内容", SECRET_REPORT.replace('"cn.gov"', '"jl.cc"')
        )
        error = _wait("the refusal", lambda: self.failed("jl.gov", "涉密报告-长春.txt"))
        assert isinstance(error, dict)  # noqa: S101
        self.rows.append(
            Row(
                "机密 报告",
                "吉林省政府办公厅 -> 长春市",
                "SECRET 机密★1年",
                "-",
                f"refused ({error['rule']})",
                "nothing left the spoke; see below",
                "-",
            )
        )

        self.drop(
            "jl.cc", "防汛请示.txt", "省政府、国务院办公厅：关于申请防汛专项资金的请示。", REQUEST
        )
        rule = _wait("the 请示's refusal", lambda: self.failed("jl.cc", "防汛请示.txt"))
        assert isinstance(rule, dict)  # noqa: S101
        self.rows.append(
            Row(
                "请示",
                "长春市 -> 吉林省政府办公厅 + 国务院办公厅",
                "INTERNAL 内部",
                "-",
                f"refused ({rule['rule']})",
                "nothing left the spoke; see below",
                "-",
            )
        )

        self._precedence()
        print(
            table(
                ("document", "route", "labels", "channel", "outcome", "receipts", "time"),
                [
                    (r.document, r.route, r.labels, r.channel, r.outcome, r.receipts, r.time)
                    for r in self.rows
                ],
            )
        )
        print(f"\n长春市被拒收的原因：{error['message_zh']}")
        print(f"处理办法：{error['hint_zh']}")
        print(f"why 长春市 was refused: {error['message']}")
        print(f"what to do: {error['hint']}")
        for finding in rule["findings"]:
            print(f"\nwhy the 请示 was refused: [{finding['rule']}] {finding['article']}")
            print(f"  {finding['zh']}")
            print(f"  {finding['en']}")
        print(f"(all of it in {self.folder('jl.cc', 'failed')}/防汛请示.txt.error.txt)")
        print(
            f"\nall of it in {time.monotonic() - started:.1f} s; the folders are in {self.scratch}/"
        )

    def _recall(self) -> None:
        """撤回: 省政府办公厅 sends 长春市 a notice in error and recalls it (by the file form,
        with its reason); 长春市 has not signed for it, so its spoke takes it out of inbox/."""
        t = self.drop("jl.gov", "错发通知.txt", "长春市人民政府：（错发的通知）", WRONG_NOTICE)
        data = _wait(
            "the notice sent in error", lambda: self.delivered("jl.gov", "错发通知.txt", "jl.cc")
        )
        msg_id = str(data["msg_id"])
        (self.folder("jl.gov", "recall") / msg_id).write_text(
            "附件有误，请勿办理", encoding="utf-8"
        )

        def withdrawn() -> Status | None:
            now = self.sent("jl.gov", "错发通知.txt") or {}
            answer = now.get("recipients", {}).get("jl.cc", {}).get("recall")
            return now if answer == "withdrawn" else None

        _wait("jl.cc to withdraw the recalled notice", withdrawn)
        self.recalled = self.folder("jl.cc", "recalled") / msg_id
        self.rows.append(
            Row(
                "通知 撤回",
                "吉林省政府办公厅 -> 长春市",
                "INTERNAL 内部 平件",
                str(data.get("channel")),
                "recalled (撤回)",
                "jl.cc: withdrawn, moved to recalled/",
                f"{(time.monotonic() - t) * 1000:.0f} ms",
            )
        )

    def _reminder(self) -> None:
        """催办: a notice 长春市 must sign for within 4 s; it does not, and the hub reminds
        it (halfway, then when due) and tells 省政府办公厅."""
        t = self.drop(
            "jl.gov", "限时通知.txt", "长春市人民政府：请于规定时间内签收。", TIMED_NOTICE
        )
        data = _wait("the timed notice", lambda: self.delivered("jl.gov", "限时通知.txt", "jl.cc"))
        reminders = self.folder("jl.cc", "inbox") / str(data["msg_id"]) / "reminders.json"

        def twice() -> list[Any] | None:
            said = json.loads(reminders.read_text(encoding="utf-8")) if reminders.exists() else []
            return said if len(said) >= 2 else None

        said = _wait("jl.cc's reminders", twice)
        self.reminded = reminders
        self.rows.append(
            Row(
                "通知 签收时限 4s",
                "吉林省政府办公厅 -> 长春市",
                "INTERNAL 内部 平件",
                str(data.get("channel")),
                "not signed for in time",
                f"jl.cc: reminded (催办) ×{len(said)}; the sender told",
                f"{(time.monotonic() - t) * 1000:.0f} ms",
            )
        )

    def _emergency(self) -> None:
        """应急 at 特提, to be signed for within 6 s: 长春市 signs for it, 农安县 does not; the
        hub names it (emergency.unacknowledged), reminds it and runs the operator's
        command, here writing alarms.jsonl."""
        t = self.drop("jl.gov", "寒潮应急.txt", "立即启动寒潮应急响应。", EMERGENCY_FLASH)
        data = _wait(
            "the emergency notice",
            lambda: self.delivered("jl.gov", "寒潮应急.txt", "jl.cc.nongan"),
        )
        msg_id = str(data["msg_id"])
        (self.folder("jl.cc", "signfor") / msg_id).touch()  # 长春市 acknowledges; 农安县 not
        alarms = self.scratch / "alarms.jsonl"

        def alarmed() -> dict[str, Any] | None:
            lines = alarms.read_text(encoding="utf-8").splitlines() if alarms.exists() else []
            found = [json.loads(x) for x in lines if x.strip()]
            return next((a for a in found if a["msg_id"] == msg_id), None)

        alarm = _wait("the emergency alarm", alarmed)
        late = ", ".join(u["org"] for u in alarm["unacknowledged"])
        self.alarms = alarms
        self.rows.append(
            Row(
                "应急 签收时限 6s",
                "吉林省政府办公厅 -> 长春市 + 农安县",
                "INTERNAL 内部 特提",
                str(data.get("channel")),
                f"not acknowledged by {late}",
                "emergency.unacknowledged; the operator's command ran (alarms.jsonl)",
                f"{(time.monotonic() - t) * 1000:.0f} ms",
            )
        )

    def _row(
        self, doc: str, route: str, labels: str, data: Status, *, recipient: str, t0: float
    ) -> None:
        recipients = data["recipients"]
        done = sum(1 for r in recipients.values() if r.get("status") in {"DELIVERED", "SIGNED_FOR"})
        waiting = len(recipients) - done
        statuses = f"ACCEPTED; {recipient}: {recipients.get(recipient, {}).get('status')}"
        if waiting:
            statuses += f"; {waiting} waiting (their spokes are not running)"
        self.rows.append(
            Row(
                doc,
                route,
                labels,
                str(data.get("channel")),
                f"delivered to {done}/{len(recipients)}",
                statuses,
                f"{(time.monotonic() - t0) * 1000:.0f} ms",
            )
        )

    def _precedence(self) -> None:
        """卫生厅 goes offline; routine notices pile up; a 特急 emergency notice overtakes them.

        Notices (通知), not letters: a 函 from the general office to its own department goes
        down a reporting line, which the rule letter_direction refuses."""
        self.stop("jl.dept.health")
        outbox = self.folder("jl.gov", "outbox")
        for i in range(self.backlog):
            (outbox / f"通知-{i:03d}.txt").write_text(f"例行通知 {i}", encoding="utf-8")
        for i in range(self.backlog):
            notice = meta(
                to="jl.dept.health", classification="内部", doc_type="通知", title=f"例行通知 {i}"
            )
            (outbox / f"通知-{i:03d}.txt.meta.toml").write_text(notice, encoding="utf-8")
        _wait(
            "the backlog to be accepted",
            lambda: len(list(self.folder("jl.gov", "sent").iterdir())) >= self.backlog + 2,
            40,
        )
        t = self.drop("jl.gov", "应急通知.txt", "紧急通知：请立即启动应急预案。", EMERGENCY)
        _wait("the emergency notice to be accepted", lambda: self.sent("jl.gov", "应急通知.txt"))
        self.start("jl.dept.health")
        data = _wait(
            "the emergency notice",
            lambda: self.delivered("jl.gov", "应急通知.txt", "jl.dept.health"),
            40,
        )
        _wait(
            "the backlog",
            lambda: len(self._complete_inbox("jl.dept.health")) >= self.backlog + 1,
            40,
        )
        order = sorted(
            (json.loads((p / "meta.json").read_text(encoding="utf-8"))["received_at"], p)
            for p in self._complete_inbox("jl.dept.health")
        )
        position = next(
            i
            for i, (_, p) in enumerate(order, 1)
            if json.loads((p / "meta.json").read_text(encoding="utf-8"))["precedence"]
            == "EXTRA_URGENT"
        )
        self.rows.append(
            Row(
                "应急 通知",
                f"吉林省政府办公厅 -> 卫生厅 (+{self.backlog} 通知 queued)",
                "INTERNAL 内部 特急",
                str(data["channel"]),
                f"arrived {position} of {len(order)}",
                f"ACCEPTED; overtook {len(order) - position} routine 通知",
                f"{(time.monotonic() - t) * 1000:.0f} ms",
            )
        )

    def _complete_inbox(self, org: str) -> list[Path]:
        """inbox/<msg_id>/ folders in place (a dot-named one is still being written)."""
        return [
            p
            for p in self.folder(org, "inbox").iterdir()
            if p.is_dir() and not p.name.startswith(".")
        ]

    def next_steps(self, *, running: bool) -> list[str]:
        """Where to look next: commands that work as printed, from the current folder."""
        config = shown(self.scratch / "hub.toml")
        hubctl, spoke = shown(BIN / "hubctl"), shown(BIN / "spoke")
        lines = [
            f"{hubctl} status --config {config}",
            f"{hubctl} trace {self.secret_msg_id} --config {config}",
            f"{hubctl} dead --config {config}",
            f"{hubctl} overdue --config {config}",
            f"{spoke} status --config {shown(self.scratch / 'jl.gov.toml')}",
            f"{spoke} status {self.recalled.name} --config {shown(self.scratch / 'jl.gov.toml')}",
        ]
        if running:
            lines.append(f"http://127.0.0.1:{self.metrics_port}/")
        return lines

    def print_next_steps(self, *, running: bool) -> None:
        what = [
            "the hub at a glance: spokes, queues, dead letters, the directory",
            "the 机密 report's life, from the audit ledger",
            "the dead letters: deliveries the hub gave up",
            "who is past a deadline (签收时限) and the reminders (催办) sent",
            "what 吉林省政府办公厅 sent and the receipts it holds",
            f"the recalled notice (撤回): who withdrew it ({shown(self.recalled)}/ at 长春市)",
            "the status page (open it in a browser while the hub runs)",
        ]
        state = "" if running else " (the hub has stopped: they read its store)"
        print(f"\nwhere to look next{state}:")
        for line, why in zip(self.next_steps(running=running), what, strict=False):
            print(f"  {line}\n      {why}")
        if not running:
            print("  make demo DEMO_ARGS=--keep leaves the hub running, with its status page")

    def shutdown(self) -> None:
        for name in list(self.procs):
            if name != "hub":
                self.stop(name)
        self.stop("hub")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the hub and spokes running")
    parser.add_argument("--folder", type=Path, default=Path("demo-run"), help="scratch folder")
    parser.add_argument(
        "--backlog", type=int, default=BACKLOG, help="routine notices the emergency overtakes"
    )
    args = parser.parse_args(argv)
    demo = Demo(args.folder.resolve(), backlog=args.backlog)
    try:
        demo.run()
    except BaseException:
        demo.shutdown()
        raise
    if args.keep:
        demo.print_next_steps(running=True)
        print("\nstill running (--keep): drop files into demo-run/<org>/outbox/ and watch inbox/;")
        print(f"stop with: kill {' '.join(str(p.pid) for p in demo.procs.values())}")
        return
    demo.shutdown()
    demo.print_next_steps(running=False)
    sys.exit(0)


if __name__ == "__main__":
    main()
