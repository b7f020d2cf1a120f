"""What both demos (``make demo``, ``make demo-federation``) do with a scratch folder of
spokes: drop documents as an integrator would, read the answers in the folders, wait."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Status = dict[str, Any]  # a sent/<msg_id>/status.json


def meta(**fields: str) -> str:
    """A NAME.meta.toml: keys quoted, so Chinese field names (主送, 密级...) work too."""
    return "".join(
        f"{json.dumps(k, ensure_ascii=False)} = {json.dumps(v, ensure_ascii=False)}\n"
        for k, v in fields.items()
    )


def wait(what: str, check: Callable[[], T | bool | None], timeout: float, logs: str) -> T:
    """``check()``'s first truthy answer; the demo ends, naming ``logs``, if none comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result  # type: ignore[return-value]
        time.sleep(0.05)
    raise SystemExit(f"gave up waiting for {what} after {timeout:.0f} s; see {logs}")


def shown(path: Path) -> str:
    """``path`` as typed from the current folder: relative below it, absolute elsewhere."""
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


@dataclass
class Row:
    """One document of a demo's closing table."""

    document: str
    route: str
    labels: str
    channel: str
    outcome: str
    receipts: str
    time: str


class Folders:
    """A demo's spokes' folders under ``scratch``/<org>/."""

    scratch: Path

    def folder(self, org: str, name: str) -> Path:
        return self.scratch / org / name

    def drop(self, org: str, name: str, content: str, meta: str) -> float:
        outbox = self.folder(org, "outbox")
        (outbox / name).write_text(content, encoding="utf-8")
        (outbox / f"{name}.meta.toml").write_text(meta, encoding="utf-8")  # the commit marker, last
        return time.monotonic()

    def sent(self, org: str, name: str) -> Status | None:
        for status in self.folder(org, "sent").glob("*/status.json"):
            data: Status = json.loads(status.read_text(encoding="utf-8"))
            if data["name"] == name:
                return data
        return None

    def failed(self, org: str, name: str) -> Status | None:
        path = self.folder(org, "failed") / f"{name}.error.json"
        if not path.exists():
            return None
        data: Status = json.loads(path.read_text(encoding="utf-8"))
        return data


def spoke_toml(org: str, *, keys: str, hub_key: str, port: int, channels: list[str]) -> str:
    """A demo spoke's configuration: its folders under the scratch folder, its keys in
    ``keys``/<org>/, its hub's pinned key, its channels on the broker at ``port``, and the
    short waits that keep a demo quick."""
    lines = [
        "[spoke]",
        f'org = "{org}"',
        f'root = "{org}"',
        f'sign_key = "{keys}/{org}/{org}.sign.key"',
        f'enc_key = "{keys}/{org}/{org}.enc.key"',
        f'hub_key = "{hub_key}"',  # its own hub's, pinned at install
        "",
        "[limits]",
        "stable_for = 0.3",
        "rescan_every = 1.0",
        "resend_every = 10.0",
        "receipt_flush = 0.02",
        "",
        "[logging]",
        'format = "json"',
    ]
    for channel in channels:
        lines += ["", f"[channels.{channel}]", f'url = "mqtt://127.0.0.1:{port}"']
    return "\n".join(lines) + "\n"
