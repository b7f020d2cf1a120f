"""Fuzz target: the ledger's evidence, as a spoke's witness and prover read it.

Input: a mode byte (its value modulo 6), then bytes.

- 0, a checkpoint frame off the ledger topic: ``read_checkpoint`` and the witness's
  ``verify`` (the hub id, the directory's hub key at the signed time, the signature).
- 1, a checkpoint body: signed with the fixture hub key and framed, so the witness's
  verification succeeds and ``decide`` judges it against the captured checkpoint it holds
  (with the captured consistency proof): consistency, forks, restores.
- 2, a ledger entry (leaf), as proofs carry them: ``Entry.from_leaf`` and its details.
- 3, a proof path: ``unpack_path``, then as the consistency proof of the hub's answer
  (``conclude``) between the captured checkpoints of sizes 2 and 3.
- 4, proof entries of a ProofMsg: ``decode_proof_entries``, each leaf and path read.
- 5, a restore leaf beside the captured inclusion path in the hub's answer (``conclude``).

The documented failure is an ``XchgError``; anything else escaping is a crash.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["schemas", "spoke", "world"]):
    import world

    from schemas import codec, transport
    from schemas.errors import XchgError
    from schemas.ledger import DOMAIN_CHECKPOINT, Entry, read_checkpoint, unpack_path
    from spoke import witnessrules

DIRECTORY = world.load_directory().directory
HUB = world.signing_key(world.HUB)


def _captured() -> tuple[list[bytes], transport.ConsistencyMsg]:
    """The checkpoints (sizes 2 and 3) and the hub's answer fuzz/capture.py recorded."""
    frames: dict[int, bytes] = {}
    answer = None
    for seed in sorted(Path(world.CORPUS / "transport").iterdir()):
        message = transport.decode(seed.read_bytes())
        if isinstance(message, transport.CheckpointMsg):
            frames[read_checkpoint(message.frame).size] = message.frame
        elif isinstance(message, transport.ProofMsg) and message.checkpoint is not None:
            frames[read_checkpoint(message.checkpoint).size] = message.checkpoint
        elif isinstance(message, transport.ConsistencyMsg) and message.restore_leaf is not None:
            answer = message
    assert answer is not None  # noqa: S101 - the capture writes one
    return [frames[2], frames[3]], answer


(OLD_FRAME, NEW_FRAME), ANSWER = _captured()
OLD = witnessrules.verify(OLD_FRAME, DIRECTORY)
NEW = witnessrules.verify(NEW_FRAME, DIRECTORY)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 6, data[1:]
    try:
        if mode == 0:
            read_checkpoint(rest)
            witnessrules.verify(rest, DIRECTORY)
        elif mode == 1:
            sig = HUB.sign(DOMAIN_CHECKPOINT, rest)
            frame = codec.encode({"v": 1, "ckpt": rest, "kid": HUB.kid, "sig": sig})
            new = witnessrules.verify(frame, DIRECTORY)
            witnessrules.decide(OLD, new, OLD.size, ANSWER.proof or b"")
            witnessrules.conclude(OLD, new, ANSWER)
        elif mode == 2:
            Entry.from_leaf(rest).details()
        elif mode == 3:
            unpack_path(rest)
            witnessrules.decide(OLD, NEW, OLD.size, rest)
            witnessrules.conclude(OLD, NEW, transport.ConsistencyMsg(OLD.size, NEW.size, rest))
        elif mode == 4:
            for leaf, path in transport.decode_proof_entries(rest):
                Entry.from_leaf(leaf).details()
                unpack_path(path)
        else:
            answer = transport.ConsistencyMsg(
                OLD.size, NEW.size, ANSWER.proof, rest, ANSWER.restore_path
            )
            witnessrules.conclude(OLD, NEW, answer)
    except XchgError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
