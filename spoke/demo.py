"""``make demo``: the wire contract end to end, on the Jilin topology, in a scratch folder.

Until the hub daemon and spoke agents exist this shows what they stand on: keys for every
organisation, a hub-signed directory, documents sealed once for many recipients, the
hub's verification without any decryption key, recipients opening them, and the
refusals that tampering and forgery meet. ``hubctl`` is run as a command, as an
operator would.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from schemas.clock import ms_to_text
from schemas.codec import FRAME_LIMITS, HDR_LIMITS, HEADER_LIMITS, decode_map, encode
from schemas.directory import Directory, sign_directory, verify_directory
from schemas.display import table
from schemas.envelope import encode_frame, verify_envelope
from schemas.errors import PeerError
from schemas.keys import DOMAIN_HEADER, HubPublicKey, SigningKey
from schemas.labels import Classification, DocType, Precedence, SecrecyPeriod
from schemas.localfs import load_encryption_key, load_signing_key
from schemas.seal import Draft, file_entry, open_bytes, seal_bytes
from schemas.topology import parse_topology
from spoke.keygen import generate_org_keys, key_paths

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _now() -> int:
    return time.time_ns() // 1_000_000


def _hubctl(*args: str) -> str:
    done = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(BIN / "hubctl"), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def _short(orgs: list[str]) -> str:
    return ", ".join(orgs[:3]) + ("…" if len(orgs) > 3 else "")


class Demo:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.orgs_dir = scratch / "certs" / "orgs"
        self.hub_dir = scratch / "certs" / "hub"
        self.rows: list[tuple[str, str, str]] = []

    def setup(self) -> Directory:
        topology = REPO / "config" / "topology.toml"
        text = topology.read_text(encoding="utf-8")
        orgs = [org.id for org in parse_topology(text, source=str(topology)).orgs]
        for org in orgs:
            generate_org_keys(org, self.orgs_dir / org, now=_now(), valid_days=730)
        print(f"keys: {len(orgs)} organisations, each with a signing and an encryption key")
        print(_hubctl("keys", "init", "--out", str(self.hub_dir)))
        print(
            _hubctl(
                "directory",
                "build",
                "--topology",
                str(topology),
                "--keys",
                str(self.orgs_dir),
                "--hub-key",
                str(self.hub_dir / "hub.sign.key"),
                "--out",
                str(self.hub_dir / "directory.bin"),
            )
        )
        pinned = HubPublicKey.load((self.hub_dir / "hub.pub.json").read_bytes(), source="hub.pub")
        verified = verify_directory(
            (self.hub_dir / "directory.bin").read_bytes(), pinned.public, now=_now()
        )
        print(
            f"directory v{verified.version} verified against the pinned hub key {pinned.kid}; "
            f"expires {ms_to_text(verified.directory.expires_at)}\n"
        )
        return verified.directory

    def signing(self, org: str) -> SigningKey:
        return load_signing_key(key_paths(org, self.orgs_dir / org).sign_key)[1]

    def send(self, directory: Directory, what: str, draft: Draft, contents: list[bytes]) -> None:
        started = time.perf_counter()
        sealed, body = seal_bytes(draft, self.signing(draft.sender), directory, contents)
        envelope = verify_envelope(sealed.frame, directory, expected_sender=draft.sender)
        opened = []
        for recipient in envelope.header.recipients:
            key = load_encryption_key(key_paths(recipient, self.orgs_dir / recipient).enc_key)[1]
            _, files = open_bytes(envelope, recipient, key, body)
            if files != contents:
                raise SystemExit(f"demo: {recipient} read other bytes than were sent; a bug")
            opened.append(recipient)
        ms = (time.perf_counter() - started) * 1000
        label = f"{draft.classification} {draft.precedence.zh} {draft.doc_type.zh}"
        self.rows.append(
            (what, label, f"opened by {len(opened)} ({_short(opened)}) in {ms:.1f} ms")
        )

    def refuse(self, what: str, attempt: Callable[[], object]) -> None:
        try:
            attempt()
        except PeerError as exc:
            self.rows.append((what, "refused", f"{exc.reason.value}: {exc.message}"))
            return
        raise SystemExit(f"demo: {what} was NOT refused; this is a bug")

    def run(self) -> None:
        directory = self.setup()
        now = _now()
        notice = "关于做好今冬明春供暖保障工作的通知".encode()
        draft = Draft(
            sender="jl.gov",
            to=directory.expand(["@prefectures"]),
            classification=Classification.INTERNAL,
            precedence=Precedence.ROUTINE,
            doc_type=DocType.NOTICE,
            title="关于做好今冬明春供暖保障工作的通知",
            doc_number="吉政办发〔2026〕12号",
            created_at=now,
            files=[file_entry("通知.txt", "text/plain", notice)],
        )
        self.send(directory, "通知 province -> @prefectures", draft, [notice])
        report = "农安县关于秋粮收购情况的报告".encode()
        self.send(
            directory,
            "报告 农安县 -> 长春市",
            Draft(
                sender="jl.cc.nongan",
                to=("jl.cc",),
                classification=Classification.INTERNAL,
                precedence=Precedence.URGENT,
                doc_type=DocType.REPORT,
                title="关于秋粮收购情况的报告",
                signatory="王某",
                created_at=now,
                files=[file_entry("报告.txt", "text/plain", report)],
            ),
            [report],
        )
        secret = b"classified annex"
        secret_draft = Draft(
            sender="jl.gov",
            to=("cn.gov",),
            classification=Classification.SECRET,
            precedence=Precedence.EXTRA_URGENT,
            doc_type=DocType.REPORT,
            title="(classified)",
            signatory="李某",
            secrecy_period=SecrecyPeriod.parse("1年"),
            copy_numbers={"cn.gov": "000001"},
            created_at=now,
            files=[file_entry("annex.bin", "application/octet-stream", secret)],
        )
        self.send(directory, "机密★1年 province -> State Council", secret_draft, [secret])

        sealed, body = seal_bytes(secret_draft, self.signing("jl.gov"), directory, [secret])
        self.refuse(
            "same frame on 长春市's topic",
            lambda: verify_envelope(sealed.frame, directory, expected_sender="jl.cc"),
        )
        self.refuse(
            "header altered in transit",
            lambda: verify_envelope(
                sealed.frame.replace(b"EXTRA_URGENT", b"FLASH\x00\x00\x00\x00\x00\x00\x00"),
                directory,
            ),
        )
        self.refuse(
            "机密 relabelled 内部 and re-signed",
            lambda: self._relabelled(directory, sealed.frame, body),
        )
        self.refuse(
            "body truncated",
            lambda: open_bytes(
                verify_envelope(sealed.frame, directory),
                "cn.gov",
                load_encryption_key(key_paths("cn.gov", self.orgs_dir / "cn.gov").enc_key)[1],
                body[:-10],
            ),
        )
        forged = SigningKey.generate()
        pinned = HubPublicKey.load((self.hub_dir / "hub.pub.json").read_bytes(), source="hub.pub")
        self.refuse(
            "directory signed by another key",
            lambda: verify_directory(sign_directory(directory, forged), pinned.public, now=now),
        )
        self._print()

    def _relabelled(self, directory: Directory, frame: bytes, body: bytes) -> object:
        """A sender lowers 机密 to 内部 and re-signs: the hub accepts the header, the
        recipient's inner check refuses it."""
        outer = decode_map(frame, FRAME_LIMITS)
        hdr = decode_map(outer["hdr"], HDR_LIMITS)
        core = decode_map(hdr["core"], HEADER_LIMITS)
        core["classification"] = "INTERNAL"
        core["secrecy_period"] = None
        new_hdr = encode({"core": encode(core), "body": hdr["body"]})
        signer = self.signing("jl.gov")
        refr = encode_frame("jl.gov", signer.kid, new_hdr, signer.sign(DOMAIN_HEADER, new_hdr))
        envelope = verify_envelope(refr, directory)
        key = load_encryption_key(key_paths("cn.gov", self.orgs_dir / "cn.gov").enc_key)[1]
        return open_bytes(envelope, "cn.gov", key, body)

    def _print(self) -> None:
        print(table(("document", "labels", "outcome"), self.rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="govxchg-demo-"))
    try:
        Demo(scratch).run()
    finally:
        if args.keep:
            print(f"\nscratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
