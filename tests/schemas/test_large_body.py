"""Sealing and opening stay in bounded memory, whatever the size of the document.

The fast tests measure Python allocations with tracemalloc while 8 MiB and 64 MiB
documents are streamed through Sealer and Opener in 1 MiB blocks. The slow test seals and
opens a 1 GiB document in a child process and reads the child's peak resident set size.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from schemas.envelope import verify_envelope
from schemas.labels import Classification, DocType, Precedence
from schemas.seal import BLOCK, Draft, FileData, Opener, Sealed, describe_file, seal_streams
from tests.world import REPO, World

MiB = 1 << 20
GiB = 1 << 30
# SHA-256 of 2**30 zero bytes, computed once outside this project (hashlib over 1 MiB
# blocks); the slow test checks the sparse file against it, not against itself.
SHA256_OF_1_GIB_ZEROS = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"
PEAK_RSS_LIMIT = 100 * 1000 * 1000  # bytes


def _sparse_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def _draft(world: World, source: Path) -> Draft:
    with source.open("rb") as f:
        entry = describe_file(source.name, "application/octet-stream", f)
    return Draft(
        sender="jl.gov",
        to=("jl.cc",),
        classification=Classification.INTERNAL,
        precedence=Precedence.ROUTINE,
        doc_type=DocType.NOTICE,
        title="大文件",
        created_at=world.now,
        files=[entry],
    )


def _traced_seal(world: World, source: Path, sink: Path) -> tuple[Sealed, int]:
    """Seal ``source`` into ``sink``; returns the seal and the traced allocation peak."""
    draft = _draft(world, source)
    with source.open("rb") as src, sink.open("wb") as out:
        tracemalloc.start()
        try:
            sealed = seal_streams(draft, world.keys["jl.gov"].signing, world.directory, [src], out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return sealed, peak


def _traced_open(world: World, sealed: Sealed, body: Path) -> tuple[str, int, int]:
    """Open ``body`` in 1 MiB blocks, hashing (not keeping) the plaintext.

    Returns (SHA-256 hex of the plaintext, its size, the traced allocation peak)."""
    envelope = verify_envelope(sealed.frame, world.directory, expected_sender="jl.gov")
    digest = hashlib.sha256()
    size = 0
    with body.open("rb") as f:
        tracemalloc.start()
        try:
            opener = Opener(envelope, "jl.cc", world.keys["jl.cc"].encryption)
            while block := f.read(MiB):
                for event in opener.feed(block):
                    if isinstance(event, FileData):
                        digest.update(event.data)
                        size += len(event.data)
            opener.close()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return digest.hexdigest(), size, peak


def _zeros_sha256(size: int) -> str:
    digest = hashlib.sha256()
    block = bytes(MiB)
    for _ in range(size // MiB):
        digest.update(block)
    return digest.hexdigest()


def test_seal_and_open_allocations_do_not_grow_with_document_size(
    world: World, tmp_path: Path
) -> None:
    assert MiB == BLOCK  # seal_streams reads its sources in 1 MiB blocks
    peaks: dict[int, tuple[int, int]] = {}
    for size in (8 * MiB, 64 * MiB):
        source = _sparse_file(tmp_path / f"doc-{size}.bin", size)
        body = tmp_path / f"body-{size}.bin"
        sealed, seal_peak = _traced_seal(world, source, body)
        assert sealed.body.size == body.stat().st_size
        digest, opened, open_peak = _traced_open(world, sealed, body)
        assert (digest, opened) == (_zeros_sha256(size), size)
        peaks[size] = (seal_peak, open_peak)
        body.unlink()
    small, large = peaks[8 * MiB], peaks[64 * MiB]
    # A few 1 MiB blocks in flight (read block, buffered plaintext, ciphertext, join),
    # never the document: 64 MiB streams through in under 6 MiB of Python allocations...
    assert max(large) < 6 * MiB, peaks
    # ... and eight times the document costs no more than a fraction of one block.
    assert large[0] - small[0] < MiB // 4, peaks
    assert large[1] - small[1] < MiB // 4, peaks


CHILD = r"""
import hashlib, json, sys
from pathlib import Path

from schemas.envelope import verify_envelope
from schemas.labels import Classification, DocType, Precedence
from schemas.seal import BodyChecker, Draft, FileData, Opener, describe_file, seal_streams
from tests.world import make_world

tmp = Path(sys.argv[1])
size = int(sys.argv[2])
world = make_world()
source = tmp / "zeros.bin"
with source.open("wb") as f:
    f.truncate(size)
with source.open("rb") as f:
    entry = describe_file("zeros.bin", "application/octet-stream", f)
draft = Draft(
    sender="jl.gov", to=("jl.cc",), classification=Classification.INTERNAL,
    precedence=Precedence.ROUTINE, doc_type=DocType.NOTICE, title="1 GiB",
    created_at=world.now, files=[entry],
)
body = tmp / "body.bin"
with source.open("rb") as src, body.open("wb") as out:
    sealed = seal_streams(draft, world.keys["jl.gov"].signing, world.directory, [src], out)
envelope = verify_envelope(sealed.frame, world.directory, expected_sender="jl.gov")

checker = BodyChecker(envelope.body)
opener = Opener(envelope, "jl.cc", world.keys["jl.cc"].encryption)
digest = hashlib.sha256()
opened = 0
with body.open("rb") as f:
    while block := f.read(1 << 20):
        checker.feed(block)
        for event in opener.feed(block):
            if isinstance(event, FileData):
                digest.update(event.data)
                opened += len(event.data)
checker.close()
opener.close()

status = Path("/proc/self/status").read_text()
hwm_kib = int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1])
print(json.dumps({
    "declared_sha256": entry.sha256.hex(),
    "opened_sha256": digest.hexdigest(),
    "opened": opened,
    "body_size": body.stat().st_size,
    "declared_body_size": sealed.body.size,
    "vm_hwm_bytes": hwm_kib * 1024,
}))
"""


@pytest.mark.slow
def test_one_gib_document_seals_verifies_and_opens_in_under_100_mb(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        result = subprocess.run(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", CHILD, str(tmp_path), str(GiB)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        for name in ("zeros.bin", "body.bin"):  # do not leave 2 GiB behind in /tmp
            (tmp_path / name).unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    children_max_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(
        f"\n1 GiB: child VmHWM {report['vm_hwm_bytes'] / 1e6:.1f} MB, "
        f"RUSAGE_CHILDREN max RSS {children_max_rss / 1e6:.1f} MB"
    )
    assert report["opened"] == GiB
    assert report["declared_sha256"] == SHA256_OF_1_GIB_ZEROS
    assert report["opened_sha256"] == SHA256_OF_1_GIB_ZEROS
    assert report["body_size"] == report["declared_body_size"] > GiB
    assert 0 < report["vm_hwm_bytes"] < PEAK_RSS_LIMIT
