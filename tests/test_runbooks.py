"""docs/operations.md's runbooks run as written, in the documented Debian layout, as the
service user where the document says so (tests/runbook.py: how, and what is mapped).

One walk, in the document's order of an operator's life: install, a routine rotation, dead
letters brought back, a compromised key revoked, the disk checked, a backup taken and
restored. A step that fails fails the test naming the runbook, the step, the command and
its output; a step that fails for a defect being fixed elsewhere (``KNOWN_DEFECTS``) is
recorded, got past, and makes the test xfail listing them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from collections.abc import Iterator

import pytest

from runtime.files import load_encryption_key, load_signing_key
from schemas.directory import verify_directory
from schemas.keys import HubPublicKey
from schemas.receipts import ReceiptStatus
from tests.runbook import (
    RUNBOOKS,
    Namespace,
    Operator,
    RunbookStepError,
    Service,
    make_root,
    namespace_problem,
    spoke_config,
    steps,
)
from tests.spokesim import SimSpoke

needs_namespace = pytest.mark.skipif(
    namespace_problem() is not None, reason=str(namespace_problem())
)


@pytest.fixture
def operator() -> Iterator[Operator]:
    root = make_root()
    ns = Namespace(root).start()
    hub = Service(ns, root)
    op = Operator(ns, hub, home=str(root / "home"), backup=str(root / "backup"))
    try:
        yield op
    finally:
        op.stop_spokes()
        hub.kill()
        ns.stop()
        shutil.rmtree(root, ignore_errors=True)


def walk(op: Operator, runbook: str, cwd: str | None = None, **placeholders: object) -> None:
    op.placeholders = placeholders  # type: ignore[assignment]
    op.cwd = cwd or op.home
    for step in steps(runbook):
        op.do(step)


def rotated_kid(op: Operator, org: str) -> str:
    """The kid of the pair ``spoke keygen --rotate`` wrote (ORG.<kid>.pub.json)."""
    listing = op.must(f"ls /etc/govxchg/{org}").stdout.split()
    names = [n for n in listing if n.startswith(f"{org}.") and n.endswith(".pub.json")]
    rotated = [n[len(org) + 1 : -len(".pub.json")] for n in names if n != f"{org}.pub.json"]
    assert len(rotated) == 1, listing
    return rotated[0]


def signing_kid(op: Operator, org: str) -> str:
    return str(json.loads(op.ns.read(f"/etc/govxchg/orgs/{org}.pub.json"))["sign"]["kid"])


def sim_spoke(op: Operator, org: str, *, auto_deliver: bool = True) -> SimSpoke:
    """ORG's spoke simulated in the test, with the keys its keygen made in the layout."""
    hub_key = HubPublicKey.load(op.ns.read("/etc/govxchg/hub/hub.pub.json"), source="hub.pub")
    directory = verify_directory(
        op.ns.read("/etc/govxchg/hub/directory.bin"), hub_key.public, now=None
    ).directory
    keys = {}
    for kind in ("sign", "enc"):
        path = op.hub.folder / f"{org}.{kind}.key"
        path.write_bytes(op.ns.read(f"/etc/govxchg/{org}/{org}.{kind}.key"))
        path.chmod(0o600)
        keys[kind] = path
    return SimSpoke(
        org,
        load_signing_key(keys["sign"])[1],
        load_encryption_key(keys["enc"])[1],
        directory,
        "127.0.0.1",
        op.broker_port,
        auto_deliver=auto_deliver,
    )


async def make_dead_letter(op: Operator, sender: str, recipient: str) -> str:
    """A document the recipient receives and never confirms: DEAD after two attempts."""
    async with sim_spoke(op, recipient, auto_deliver=False), sim_spoke(op, sender) as s:
        sealed = await s.send([recipient])
        await s.wait_for(lambda: s.has(sealed.header.msg_id, ReceiptStatus.DEAD), within=30)
    return sealed.header.msg_id.hex()


def run_walk(op: Operator) -> None:
    walk(op, "install")
    op.start_spoke("jl.cc")  # jl.cc's server runs its agent (docs/integrators.md)
    walk(
        op,
        "rotation",
        cwd="/etc/govxchg/jl.cc",  # the new jl.cc.<kid>.pub.json is handed over here
        **{"<kid>": lambda: rotated_kid(op, "jl.cc"), "...": spoke_config("jl.cc")},
    )
    dead = asyncio.run(make_dead_letter(op, "jl.gov", "jl.jl"))
    walk(op, "dead letters", ORG="jl.jl", MSG_ID=dead)
    walk(op, "revocation", ORG="jl.jl", KID=signing_kid(op, "jl.jl"), DIR="/etc/govxchg/jl.jl")
    walk(op, "disk")
    walk(
        op,
        "backup and restore",
        ORG="jl.cc",
        DATE=dt.datetime.now(dt.UTC).astimezone().date().isoformat(),
    )


@pytest.mark.slow
@needs_namespace
def test_the_runbooks_of_the_operations_guide_run_as_written(operator: Operator) -> None:
    failure = ""
    try:
        run_walk(operator)
    except RunbookStepError as exc:
        failure = str(exc)
    print(operator.walk.summary())
    if failure:
        pytest.fail(f"{failure}\n\nwhat ran before:\n{operator.walk.summary()}", pytrace=False)
    assert operator.hub.process is not None
    assert operator.hub.process.poll() is None, "the hub is running at the end"
    # what the runbooks' prose says to check in the hub's log ("Check it took effect")
    events = operator.hub.events()
    revoked = [e for e in events if e.get("event") == "key.revoked"]
    assert [(e["org"], e["reason"]) for e in revoked] == [("jl.jl", "server stolen 2026-12-01")]
    assert any(e.get("event") == "delivery.dead" for e in events)
    switched = [e for e in operator.spokes["jl.cc"].events() if e.get("event") == "keys.switched"]
    assert switched, "jl.cc's agent signs with its rotated key (rotation, step 3)"
    if operator.walk.defects:
        pytest.xfail(operator.walk.defects_by_cause())


SAMPLE = """\
## Installing

```sh
sudo mkdir -p /etc/x   # a comment
cd /opt && sudo make \\
     setup
#   a step in words
```

## Next

**A runbook.** Run `hubctl dead ORG`, then `hubctl redeliver --dead` (or `hubctl
redeliver MSG_ID` for one); `[delivery] max_attempts` and `cp` are not commands.

```console
$ hubctl status
```

**Another one.** `spoke status`.
"""


def test_runbook_steps_are_the_documents_commands_in_order_fenced_and_inline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(RUNBOOKS, "sample install", "## Installing")
    monkeypatch.setitem(RUNBOOKS, "sample runbook", "**A runbook.**")
    install = [(s.text, s.command) for s in steps("sample install", SAMPLE)]
    assert install == [
        ("sudo mkdir -p /etc/x # a comment", "sudo mkdir -p /etc/x"),
        ("cd /opt", "cd /opt"),
        ("sudo make setup", "sudo make setup"),
        ("# a step in words", ""),
    ]
    runbook = [(s.text, s.alternative) for s in steps("sample runbook", SAMPLE)]
    assert runbook == [
        ("hubctl dead ORG", False),
        ("hubctl redeliver --dead", False),
        ("hubctl redeliver MSG_ID", True),
    ]


@pytest.mark.parametrize("runbook", sorted(RUNBOOKS))
def test_every_runbook_the_walk_follows_is_in_the_operations_guide(runbook: str) -> None:
    assert [s for s in steps(runbook) if not s.text.startswith("#")]
