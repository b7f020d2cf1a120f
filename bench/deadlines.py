"""What one round of the deadline desk costs as documents with deadlines pile up.

    python bench/deadlines.py [--docs 1000] [--recipients 10] [--store sqlite|postgresql]

Fills a fresh store with ``--docs`` documents, each to ``--recipients`` recipients with a
signing deadline a day away and a handling deadline five days away (every recipient still
owes both: the worst case, nothing closes), then times the desk's round with nothing due
(what it costs every ``[deadlines] look_every``) and the round that reminds everyone at
once (before the deadline: two signed REMINDED batches a recipient, one for it and one for
its sender). The issuer publishes into nothing; what is timed is the store and the desk.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import sys
import tempfile
import time
from pathlib import Path

import structlog

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hubd.config import Deadlines
from hubd.core.deadlines import DAY_MS
from hubd.core.states import DeliveryState
from hubd.engine.deadlines import DeadlineDesk
from hubd.engine.issuer import ReceiptIssuer
from hubd.store.audit import AuditEvent
from hubd.store.db import Store
from hubd.store.writes import NewMessage
from tests.world import make_world

NOW = 1_795_000_000_000


def message(n: int, recipients: list[str]) -> NewMessage:
    frame = b"frame-%d" % n
    msg_id = hashlib.sha256(frame).digest()[:16]
    row = {
        "msg_id": msg_id, "sender": "jl.gov", "classification": 1, "precedence": 0,
        "doc_type": "NOTICE", "created_at": NOW, "expires_at": None, "received_at": NOW + n,
        "arrival_channel": "govnet", "state": "ACCEPTED", "reason": None, "frame": frame,
        "frame_sha256": hashlib.sha256(frame).digest(), "body_size": 4, "body": b"body",
        "body_path": None, "sign_by": NOW + DAY_MS, "accept_by": None,
        "done_by": NOW + 5 * DAY_MS, "case_no": None, "drill": False, "terms_open": True,
    }  # fmt: skip
    deliveries = [
        {
            "msg_id": msg_id,
            "recipient": r,
            "channel": "govnet",
            "precedence": 0,
            "state": DeliveryState.DELIVERED.value,
            "attempts": 1,
            "expires_at": None,
            "created_at": NOW + n,
            "updated_at": NOW + n,
        }
        for r in recipients
    ]
    return NewMessage(row, deliveries, [AuditEvent("message.accepted", NOW + n, msg_id)])


async def run(docs: int, per: int, url: str) -> None:
    world = make_world()
    orgs = [o.id for o in world.directory.orgs if o.id != "jl.gov"][:per]
    async with Store(url) as store:
        for start in range(0, docs, 200):
            await store.submit_many(
                [message(n, orgs) for n in range(start, min(docs, start + 200))]
            )
        clock = [NOW]
        loop = asyncio.get_running_loop()

        def publish(_c: str, _o: str, _p: bytes) -> asyncio.Future[bool]:
            done = loop.create_future()
            done.set_result(True)
            return done

        issuer = ReceiptIssuer(
            world.directory.hub_id, world.hub_key, store, publish, lambda: clock[0]
        )
        desk = DeadlineDesk(store, issuer, Deadlines(), lambda: clock[0])
        started = time.perf_counter()
        await desk.round()
        quiet = time.perf_counter() - started
        clock[0] = NOW + DAY_MS // 2 + 1  # within remind_before of sign_by: everyone reminded
        started = time.perf_counter()
        await desk.round()
        busy = time.perf_counter() - started
    items = docs * per * 2
    kind = url.split(":", maxsplit=1)[0]
    print(f"{docs} documents x {per} recipients, 2 deadlines each ({items} open items), {kind}")
    print(f"round with nothing due: {quiet * 1000:.0f} ms ({quiet / items * 1e6:.1f} us an item)")
    print(f"round reminding {docs * per} recipients: {busy * 1000:.0f} ms "
          f"({busy / (docs * per) * 1e6:.0f} us a reminder)")  # fmt: skip


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--recipients", type=int, default=10)
    parser.add_argument("--store", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="govx-bench-") as folder:
        url = args.store or f"sqlite+aiosqlite:///{Path(folder) / 'hub.db'}"
        asyncio.run(run(args.docs, args.recipients, url))


if __name__ == "__main__":
    main()
