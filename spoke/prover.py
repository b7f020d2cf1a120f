"""``spoke prove MSG_ID``: ask the hub for a message's ledger entries and write evidence.

The agent sends ``["prove", msg_id, after]`` on the channel the message travelled,
collects the ``proof`` pages (``more``: ask again after the last seq; a page whose
checkpoint differs from the first page's starts the collection again), checks the
checkpoint's signature with the directory's hub key, has the witness judge it (it must be
the checkpoint held or proven consistent with it; a fork found so is recorded like any
other and no file is written), adds the receipt batches this spoke kept for the message
(spoke.state ``receipt_frames``) and the keys of their issuers, and writes the evidence
file (schemas.evidence, docs/wire-format.md 12.5) atomically:
``sent/<msg_id>/evidence.json`` for a message it sent, ``.spoke/evidence/<msg_id>.json``
for one it received (an inbox folder holds exactly what its meta.json lists).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.files import atomic_write
from schemas import evidence, transport
from schemas.errors import PeerError, XchgError
from schemas.ids import msg_id_text
from schemas.ledger import Consistent, Entry, Fork, SignedCheckpoint, unpack_path
from spoke.context import SpokeContext
from spoke.witness import RestoreChecked, Same, Witness, verify

Send = Callable[[str, bytes], Awaitable[bool]]
MAX_PAGES = 1000
MAX_RESTARTS = 3


@dataclass
class ProveError(XchgError):
    """Why no evidence file was written: a code and one bilingual sentence."""

    code: str
    message: str

    def __str__(self) -> str:
        return self.message


REFUSALS = {
    "ledger.not_a_party": "枢纽拒绝：只有该文件的发文单位和收文单位可以索取证明 / the hub "
    "refused: only the sender and the recipients of a message can ask for its proof",
    "ledger.unknown_message": "枢纽的账本中没有这份文件，请核对 msg_id / the hub's ledger has "
    "no entry for this message: check the msg_id",
    "ledger.channel_below_label": "该通道密级上限低于文件密级，请在文件所走的通道上索取 / the "
    "channel's ceiling is below the message's label: ask on the channel it travelled",
    "ledger.too_large": "该文件的一条账本记录超过一次应答的容量，请枢纽运维人员用 hubctl audit "
    "prove 导出证明 / one of the message's ledger entries is larger than an answer can carry: "
    "ask the hub operator for its evidence (hubctl audit prove)",
}


def _no_directory() -> ProveError:
    return ProveError(
        "prove.no_directory",
        "交换程序没有有效的通讯录，无法核验枢纽签名，请等待枢纽发布新通讯录 / the agent holds "
        "no valid directory to check the hub's signature: wait for the hub's next directory",
    )


@dataclass
class Proven:
    path: Path
    doc: dict[str, Any]
    entries: int
    receipts: int
    size: int
    problems: list[str] = field(default_factory=list)


class Prover:
    def __init__(self, ctx: SpokeContext, send: Send, witness: Witness) -> None:
        self.ctx = ctx
        self.send = send
        self.witness = witness
        self._waiting: dict[bytes, asyncio.Future[transport.ProofMsg]] = {}

    def proof(self, message: transport.ProofMsg) -> None:
        future = self._waiting.get(message.msg_id)
        if future is not None and not future.done():
            future.set_result(message)

    async def prove(self, msg_id: bytes) -> Proven:
        where = self.ctx.state.message_channel(msg_id)
        if where is None:
            raise ProveError(
                "prove.unknown_message",
                "本交换程序没有发出或收到过这份文件，请核对 msg_id / this spoke neither sent nor "
                "received that message: check the msg_id",
            )
        channel, role = where
        if msg_id in self._waiting:
            raise ProveError(
                "prove.busy",
                "正在为这份文件索取证明，请稍后再试 / a proof of this message is being fetched "
                "already: try again in a moment",
            )
        self._waiting[msg_id] = asyncio.get_running_loop().create_future()
        try:
            for _ in range(MAX_RESTARTS):
                collected = await self._collect(channel, msg_id)
                if collected is not None:
                    break
            else:
                raise ProveError(
                    "prove.moving",
                    "枢纽账本在索取期间不断更新，请重试 / the hub's ledger moved on while "
                    "the pages came: run the command again",
                )
        finally:
            self._waiting.pop(msg_id, None)
        checkpoint, entries = collected
        signed = self._verified(checkpoint)
        await self._witnessed(channel, signed)
        return await asyncio.to_thread(self._write, msg_id, role, signed, entries)

    def _verified(self, checkpoint: bytes) -> SignedCheckpoint:
        directory = self.ctx.directory()
        if directory is None:
            raise _no_directory()
        try:
            return verify(checkpoint, directory)
        except PeerError as exc:
            raise _bad(f"its checkpoint: {exc.message}") from exc

    async def _witnessed(self, channel: str, signed: SignedCheckpoint) -> None:
        """The proof's checkpoint, judged by the witness against the one it holds."""
        match await self.witness.examine(channel, signed):
            case Same() | Consistent() | RestoreChecked():
                return
            case Fork():
                raise ProveError(
                    "prove.fork",
                    "账本分叉：证明所依据的枢纽检查点与本机见证的账本历史矛盾，已记录，未写证据"
                    "文件，见 spoke status / ledger fork: the checkpoint the hub's proof leads "
                    "to contradicts the history this spoke witnessed; recorded, no evidence "
                    "file written: see spoke status",
                )
            case None if self.witness.held is None:
                raise ProveError(
                    "prove.no_checkpoint",
                    "交换程序尚未持有枢纽的账本检查点，无法核对证明，请等它连上枢纽后重试 / the "
                    "agent holds no checkpoint of the hub yet to check the proof against: let "
                    "it connect to the hub, then try again",
                )
            case _:
                raise ProveError(
                    "prove.unproven",
                    "枢纽未能证明其证明所依据的检查点与本机持有的检查点属于同一账本历史，未写证据"
                    "文件，请稍后重试 / the hub did not prove that the checkpoint its proof "
                    "leads to and the one this spoke holds are one history; no evidence file "
                    "written: try again later, and see spoke status",
                )

    async def _ask(self, channel: str, msg_id: bytes, after: int) -> transport.ProofMsg:
        future: asyncio.Future[transport.ProofMsg] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = future
        payload = transport.encode(transport.ProveAsk(msg_id, after))
        if not await self.send(channel, payload):
            raise ProveError(
                "prove.not_connected",
                f"交换程序未连接到通道 {channel} 的枢纽，请检查网络后重试 / the agent is not "
                f"connected to the hub on channel {channel}: check the network, then try again",
            )
        try:
            async with asyncio.timeout(self.ctx.config.ledger.answer_timeout):
                return await future
        except TimeoutError:
            raise ProveError(
                "prove.no_answer",
                "枢纽未答复，请稍后重试或询问枢纽运维人员 / the hub did not answer: try again "
                "later, or ask the hub operator whether it proves ledger entries",
            ) from None

    async def _collect(
        self, channel: str, msg_id: bytes
    ) -> tuple[bytes, list[tuple[bytes, list[bytes]]]] | None:
        """(checkpoint, [(leaf, path)]) of every page, or None if the checkpoint moved."""
        checkpoint: bytes | None = None
        entries: list[tuple[bytes, list[bytes]]] = []
        after = 0
        for _ in range(MAX_PAGES):
            page = await self._ask(channel, msg_id, after)
            if page.refusal is not None:
                sentence = REFUSALS.get(
                    page.refusal,
                    f"枢纽拒绝（{page.refusal:.60}）/ the hub refused ({page.refusal:.60})",
                )
                raise ProveError(page.refusal[:60], sentence)
            if page.checkpoint is None or page.entries is None:
                raise _bad("a proof page without its checkpoint or entries")
            if checkpoint is not None and page.checkpoint != checkpoint:
                return None
            checkpoint = page.checkpoint
            try:
                pairs = transport.decode_proof_entries(page.entries)
                decoded = [(leaf, Entry.from_leaf(leaf), unpack_path(path)) for leaf, path in pairs]
            except PeerError as exc:
                raise _bad(exc.message) from exc
            entries += [(leaf, path) for leaf, _, path in decoded]
            if not page.more:
                break
            if not decoded or decoded[-1][1].seq <= after:
                raise _bad("a page that says more follows but does not move on")
            after = decoded[-1][1].seq
        if checkpoint is None or not entries:
            raise _bad("no entries")
        return checkpoint, entries

    def _write(
        self,
        msg_id: bytes,
        role: str,
        signed: SignedCheckpoint,
        entries: list[tuple[bytes, list[bytes]]],
    ) -> Proven:
        directory = self.ctx.directory()
        if directory is None:
            raise _no_directory()
        checkpoint = signed.frame
        kept = self.ctx.state.receipt_frames(msg_id)
        keys: dict[str, list[tuple[str, bytes]]] = {}
        for issuer, _ in kept:
            org = directory.org(issuer)
            if org is not None:
                keys[issuer] = [(k.kid, k.public) for k in org.sign_keys]
        doc = evidence.build(
            msg_id=msg_id,
            made_by=self.ctx.org,
            made_at=self.ctx.clock(),
            hub_id=directory.hub_id,
            hub_keys=[(k.kid, k.public) for k in directory.hub_keys],
            checkpoint=checkpoint,
            entries=entries,
            receipts=[frame for _, frame in kept],
            keys=keys,
        )
        report = evidence.verify(doc, trusted_hub_keys=[k.public for k in directory.hub_keys])
        name = msg_id_text(msg_id)
        sent = self.ctx.config.folder("sent") / name
        if role == "sent" and sent.is_dir():
            path = sent / "evidence.json"
        else:
            path = self.ctx.config.work / "evidence" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, evidence.dumps(doc).encode(), mode=0o644)
        return Proven(
            path, doc, len(entries), len(doc["receipts"]), signed.size, list(report.problems)
        )


def _bad(what: str) -> ProveError:
    return ProveError(
        "prove.bad_answer",
        f"枢纽的答复有误（{what[:200]}），请告知枢纽运维人员 / the hub's answer is wrong "
        f"({what[:200]}): tell the hub operator",
    )
