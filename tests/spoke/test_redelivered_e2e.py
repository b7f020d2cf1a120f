"""The operator's day, end to end with a real hubd and real spokes: a recipient whose
encryption key file was replaced on its server cannot open what is sealed for the key the
directory lists; its spoke says so at start, the hub gives up (DEAD), the key file is put
back, ``hubctl redeliver`` sends it again, and the sender's ``status.json`` moves on from
DEAD to DELIVERED with the history of both.
"""

from __future__ import annotations

from runtime.files import write_private
from schemas.keys import EncryptionKey, dump_secret_key
from tests.spoke.conftest import ExchangeFactory
from tests.spoke.test_ledger_e2e import hubctl
from tests.world import World

GIVE_UP_AT_ONCE = "[delivery]\nretry_initial = 1.0\nretry_max = 1.0\nmax_attempts = 1\n"


async def test_a_dead_letter_redelivered_after_the_key_is_back_reads_delivered_at_the_sender(
    exchanges: ExchangeFactory, world: World
) -> None:
    exchange = exchanges(hub_toml=GIVE_UP_AT_ONCE)
    assert exchange.hub is not None
    cc = exchange.spoke("jl.cc")
    cc.write()
    key_file = cc.folder / "keys" / "jl.cc.enc.key"
    listed = key_file.read_bytes()
    write_private(key_file, dump_secret_key("jl.cc", EncryptionKey.generate()), overwrite=True)
    gov, cc = await exchange.running("jl.gov", "jl.cc")

    # a first start holds no directory yet: it checks the one that arrives
    warned = await cc.wait_logged("keys.not_in_directory", this_run=True, checked="directory")
    assert world.keys["jl.cc"].encryption.kid in str(warned["detail"])
    assert "keys.not_in_directory" not in [e["event"] for e in gov.events(this_run=True)]

    notice = {"主送": "jl.cc", "密级": "内部", "文种": "通知", "标题": "重新投递"}
    gov.drop("通知.txt", "关于供暖的通知。\n".encode(), notice)
    dead = await gov.wait_status("通知.txt", "jl.cc", "DEAD")
    assert dead["status"] == "DEAD"

    write_private(key_file, listed, overwrite=True)  # the operator puts the key back
    done = hubctl("redeliver", dead["msg_id"], "--config", str(exchange.hub.folder / "hub.toml"))
    assert done.returncode == 0, done.stderr

    after = await gov.wait_status("通知.txt", "jl.cc", "DELIVERED")
    assert after["status"] == "DELIVERED"
    history = after["recipients"]["jl.cc"]["history"]
    assert [h["status"] for h in history] == ["DEAD", "DELIVERED"]
    assert history[0]["reason"] == "delivery.gave_up"
    assert (cc.inbox / dead["msg_id"]).is_dir()
