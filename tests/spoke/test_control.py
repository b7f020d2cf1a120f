"""The control folder (spoke.control): only the agent's own user may ask the agent."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from spoke import control


def now() -> int:
    return time.time_ns() // 1_000_000


def request(kind: str = "prove") -> bytes:
    doc = {"kind": kind, "args": {}, "made_at": now(), "expires_at": now() + 60_000}
    return json.dumps(doc).encode()


def test_the_agent_makes_the_control_tree_private_even_where_it_was_not(tmp_path: Path) -> None:
    for name in ("requests", "answers"):
        (tmp_path / "control" / name).mkdir(parents=True, mode=0o777)
        (tmp_path / "control" / name).chmod(0o777)
    control.secure(tmp_path)
    for path in (tmp_path / "control", tmp_path / "control" / "requests"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    fresh = tmp_path / "fresh"
    control.secure(fresh)
    assert stat.S_IMODE((fresh / "control" / "answers").stat().st_mode) == 0o700


def test_a_request_of_the_agents_own_user_is_taken_with_its_uid(tmp_path: Path) -> None:
    rid = control.submit(tmp_path, "prove", {"msg_id": "00"}, timeout=30)
    assert control.take(tmp_path, now()) == [(rid, "prove", {"msg_id": "00"}, os.getuid())]


def test_a_request_that_is_a_symbolic_link_is_refused_and_removed(tmp_path: Path) -> None:
    requests = control.folder(tmp_path, "requests")
    target = tmp_path / "elsewhere.json"
    target.write_bytes(request())
    (requests / "abc.json").symlink_to(target)
    with capture_logs() as logs:
        assert control.take(tmp_path, now()) == []
    assert [e["event"] for e in logs] == ["control.refused"]
    assert not (requests / "abc.json").is_symlink()
    assert target.exists()  # never followed


def test_a_request_of_another_user_is_refused_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = control.folder(tmp_path, "requests")
    (requests / "abc.json").write_bytes(request())
    owner = (requests / "abc.json").stat().st_uid
    if os.getuid() == 0:
        os.chown(requests / "abc.json", 4242, -1)
        owner = 4242
    else:  # the agent runs as someone else than the file's owner
        monkeypatch.setattr(os, "getuid", lambda: owner + 1)
    with capture_logs() as logs:
        assert control.take(tmp_path, now()) == []
    (refused,) = logs
    assert (refused["event"], refused["uid"]) == ("control.refused", owner)
    assert not (requests / "abc.json").exists()
