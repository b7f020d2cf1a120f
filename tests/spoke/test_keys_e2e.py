"""Keys over time with real spoke processes and a real hubd (tests/spoke/procs.py):

- a running spoke takes a rotated key into use without a restart, but only once the hub
  has published a directory that lists it;
- a recipient that rotated its encryption key still opens a document sealed for its old
  key (queued at the hub while it was away), and refuses one whose key it no longer holds
  until the key file is put back;
- a revoked sender's document, still queued for an offline recipient, is refused by that
  recipient once it holds the new directory; the revoked sender holds its drops.

The operator's side is typed as on the server: ``spoke keygen --rotate``, ``hubctl
directory build``, ``hubctl keys revoke``, then SIGHUP (tests/ops/keysite.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from runtime.files import write_private
from schemas.dirtree import verify_root
from schemas.envelope import read_frame_sender, verify_envelope
from schemas.keys import PublicKeys, dump_secret_key
from tests.ops.keysite import OperatorSite
from tests.spoke.conftest import ExchangeFactory
from tests.spoke.procs import SpokeProcess, eventually, spoke_command
from tests.world import World


def notice(title: str, to: str) -> dict[str, object]:
    return {"主送": to, "密级": "内部", "文种": "通知", "标题": title}


def rotate(spoke: SpokeProcess) -> PublicKeys:
    """``spoke keygen --rotate`` into the spoke's key folder; the new public key file."""
    keys = spoke.folder / "keys"
    before = set(keys.glob("*.pub.json"))
    made = spoke_command("keygen", "--org", spoke.org, "--out", str(keys), "--rotate")
    assert made.returncode == 0, made.stderr
    (pub,) = set(keys.glob("*.pub.json")) - before
    return PublicKeys.load(pub.read_bytes(), source=str(pub))


def pub_file(spoke: SpokeProcess, keys: PublicKeys) -> Path:
    return spoke.folder / "keys" / f"{spoke.org}.{keys.sign_kid}.pub.json"


def signed_by(spoke: SpokeProcess, name: str) -> str:
    """The key id that signed the envelope of drop ``name`` (from the agent's state)."""
    rows = spoke.state_rows("SELECT name, frame FROM outbound")
    (frame,) = [bytes(f) for n, f in rows if n == name]
    return read_frame_sender(frame)[1]


def sealed_for(spoke: SpokeProcess, name: str, recipient: str, site: OperatorSite) -> str:
    """The encryption key id the file key of drop ``name`` was sealed to for ``recipient``."""
    rows = spoke.state_rows("SELECT name, frame FROM outbound")
    (frame,) = [bytes(f) for n, f in rows if n == name]
    return verify_envelope(frame, site.directory).header.keys[recipient].kid


async def test_a_running_spoke_signs_with_its_rotated_key_once_the_hub_publishes_it(
    exchanges: ExchangeFactory, world: World, tmp_path: Path
) -> None:
    exchange = exchanges()
    assert exchange.hub is not None
    site = OperatorSite(exchange.hub, world, tmp_path / "operator")
    gov, cc = await exchange.running("jl.gov", "jl.cc")
    assert gov.process is not None
    pid = gov.process.pid
    old_kid = world.keys["jl.gov"].signing.kid

    new = rotate(gov)
    loaded = await gov.wait_logged("keys.loaded", this_run=True)
    assert new.sign_kid in loaded["signing"]  # held without a restart ...
    gov.drop("before.txt", b"before the directory lists the new key\n", notice("发布前", "jl.cc"))
    await gov.wait_status("before.txt", "jl.cc")
    assert signed_by(gov, "before.txt") == old_kid  # ... but not used: the hub would refuse it

    site.hand_over(pub_file(gov, new))
    site.build("--overlap", "7d")
    exchange.hub.hup()

    updated = await gov.wait_logged("directory.updated", this_run=True, version=2)
    assert updated["previous_version"] == 1
    switched = await gov.wait_logged("keys.switched", this_run=True)
    assert (switched["from_kid"], switched["to_kid"]) == (old_kid, new.sign_kid)
    await cc.wait_logged("directory.updated", this_run=True, version=2)
    gov.drop("after.txt", b"signed with the rotated key\n", notice("发布后", "jl.cc"))
    status = await gov.wait_status("after.txt", "jl.cc")
    assert signed_by(gov, "after.txt") == new.sign_kid
    received = await cc.wait_received("发布后")
    assert received["msg_id"] == status["msg_id"]
    assert gov.process.pid == pid
    assert len(gov.logged("spoke.starting")) == 1  # never restarted

    held = gov.cli("keys")
    assert held.returncode == 0, held.stderr
    lines = held.stdout.splitlines()
    assert any(new.sign_kid in line and "in use (signs)" in line for line in lines)
    assert any(old_kid in line and "being rotated out" in line for line in lines)
    shown = gov.cli("status")
    assert "sending: yes, since" in shown.stdout
    assert f"signing with key {new.sign_kid} (directory v2)" in shown.stdout


async def test_a_recipient_opens_what_was_sealed_for_its_old_key_and_needs_that_key_to(
    exchanges: ExchangeFactory, world: World, tmp_path: Path
) -> None:
    exchange = exchanges()
    assert exchange.hub is not None
    site = OperatorSite(exchange.hub, world, tmp_path / "operator")
    (gov,) = await exchange.running("jl.gov")
    cc = exchange.spoke("jl.cc")
    cc.write()  # installed, keys in place, not running: its deliveries wait at the hub
    old_enc = world.keys["jl.cc"].encryption.kid
    gov.drop("queued.txt", b"sealed for the old key\n", notice("旧密钥", "jl.cc"))
    await eventually(lambda: (gov.status("queued.txt") or {}).get("hub") == "ACCEPTED", "ACCEPTED")

    new = rotate(cc)
    site.hand_over(pub_file(cc, new))
    site.build()
    exchange.hub.hup()
    await gov.wait_logged("directory.updated", this_run=True, version=2)
    gov.drop("fresh.txt", b"sealed for the new key\n", notice("新密钥", "jl.cc"))
    await eventually(lambda: (gov.status("fresh.txt") or {}).get("hub") == "ACCEPTED", "ACCEPTED")
    assert sealed_for(gov, "queued.txt", "jl.cc", site) == old_enc
    assert sealed_for(gov, "fresh.txt", "jl.cc", site) == new.enc_kid

    # The operator "cleans up" too early: the new secret replaces the old one's file.
    keys = cc.folder / "keys"
    shutil.copyfile(keys / f"jl.cc.enc.{new.enc_kid}.key", keys / "jl.cc.enc.key")
    await cc.started()

    await cc.wait_received("新密钥")
    refused = await cc.wait_logged(
        "inbox.refused", this_run=True, reason="envelope.key_unseal_failed"
    )
    assert old_enc in refused["detail"]
    assert "which this spoke does not hold" in refused["detail"]
    assert cc.received_titled("旧密钥") == []
    # Put the old secret back (under its rotated name): the hub's next resend opens.
    write_private(
        keys / f"jl.cc.enc.{old_enc}.key", dump_secret_key("jl.cc", world.keys["jl.cc"].encryption)
    )
    opened = await cc.wait_received("旧密钥")
    assert opened["files"][0]["sha256"]
    await gov.wait_status("queued.txt", "jl.cc")


async def test_a_revoked_senders_queued_document_is_refused_by_its_recipient(
    exchanges: ExchangeFactory, world: World, tmp_path: Path
) -> None:
    exchange = exchanges()
    assert exchange.hub is not None
    site = OperatorSite(exchange.hub, world, tmp_path / "operator")
    (gov,) = await exchange.running("jl.gov")
    cc = exchange.spoke("jl.cc")
    kid = world.keys["jl.gov"].signing.kid
    gov.drop("stolen.txt", b"signed before the revocation\n", notice("吊销前", "jl.cc"))
    await eventually(lambda: (gov.status("stolen.txt") or {}).get("hub") == "ACCEPTED", "ACCEPTED")

    site.revoke(kid, "the office's server was stolen")
    exchange.hub.hup()

    # the revoked sender holds: nothing more goes out under the stolen key
    held = await gov.wait_logged("spoke.no_signing_key", this_run=True)
    assert f"{kid} is revoked" in held["detail"]
    gov.drop("later.txt", b"waits in the outbox\n", notice("吊销后", "jl.cc"))
    await eventually(
        lambda: "HELD" in gov.cli("status").stdout and "1 drop waiting" in gov.cli("status").stdout,
        "spoke status to say HELD with the drop waiting",
    )
    # the recipient comes online with the new directory and refuses what the key signed
    await cc.started()
    directory = await cc.wait_logged("directory.updated", this_run=True)
    assert directory["version"] == 2
    refused = await cc.wait_logged("inbox.refused", this_run=True, reason="sig.key_revoked")
    assert f"key {kid} (used by jl.gov) is revoked" in refused["detail"]
    assert cc.received_titled("吊销前") == []
    assert (gov.outbox / "later.txt").exists()
    frame = cc.state_rows("SELECT frame FROM dir_root")[0][0]
    assert kid in verify_root(bytes(frame), world.hub_key.public, now=None).root.revoked


async def test_a_spoke_whose_last_listed_key_ends_soon_warns_in_its_log_and_spoke_keys(
    exchanges: ExchangeFactory, world: World
) -> None:
    exchange = exchanges()  # its directory lists each organisation's keys for 30 days
    quiet, (gov,) = exchange.spoke("jl.cc"), [exchange.spoke("jl.gov")]
    quiet.write()  # warned 14 days ahead (the default): nothing to say yet
    gov.write(key_warn_days=40.0)
    await exchange.running("jl.cc", "jl.gov")

    warned = await gov.wait_logged("key.expiring", this_run=True, kind="signing")
    assert warned["org"] == "jl.gov"
    assert warned["kid"] == world.keys["jl.gov"].signing.kid
    assert (warned["checked"], warned["level"]) == ("directory", "warning")  # on arrival
    assert 29 <= warned["days_left"] <= 30
    assert "this spoke can no longer sign" in warned["detail"]
    assert "spoke keygen --rotate" in warned["detail"]
    assert gov.logged("key.expiring", this_run=True, kind="encryption")
    assert not quiet.logged("key.expiring")

    held = gov.cli("keys")
    assert held.returncode == 0, held.stderr
    assert (
        f"warning: the last signing key of jl.gov in the directory, {warned['kid']}" in held.stdout
    )
    assert "warning:" not in quiet.cli("keys").stdout

    assert gov.terminate() == 0  # and from the directory it kept, at every start
    gov.start()
    again = await gov.wait_logged("key.expiring", this_run=True, kind="signing")
    assert again["checked"] == "start"
