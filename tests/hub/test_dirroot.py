"""The directory as a real hubd serves it to spokes whatever its size (issue 14): the signed
root retained on each channel's dirroot topic, its change after a reload, and entries with
proofs (or proven absences) in answer to a spoke's dir-get on its up topic."""

from __future__ import annotations

from schemas import codec, dirtree, topics, transport
from schemas.directory import Directory, sign_directory
from schemas.dirtree import verify_answer, verify_delta, verify_root
from tests.hub.conftest import Observer, SpokeMaker, wait_for_log
from tests.hub.test_lifecycle import replace_directory
from tests.hubproc import HubProcess
from tests.world import World


def roots(observer: Observer, world: World) -> list[dirtree.VerifiedRoot]:
    """The verified roots seen on dirroot topics."""
    out = []
    for topic, payload, _ in observer.messages:
        if not topic.endswith("/dirroot"):
            continue
        root_frame, _delta = dirtree.read_publication(payload)
        out.append(verify_root(root_frame, world.hub_key.public, now=None))
    return out


def answers(observer: Observer) -> list[transport.DirEntriesMsg]:
    """The directory answers seen on down topics."""
    out = []
    for topic, payload, _ in observer.messages:
        if "/down/" not in topic:
            continue
        message = transport.decode(payload)
        if isinstance(message, transport.DirEntriesMsg):
            out.append(message)
    return out


async def test_the_hub_retains_a_small_signed_root_of_the_directory_it_serves(
    hub: HubProcess, world: World, live_dir: Directory
) -> None:
    channel = live_dir.channels[0].id
    async with Observer(hub.port, topics.dirroot(channel)) as watch:
        await watch.wait_for(lambda: bool(watch.messages))
    [root] = roots(watch, world)
    assert root.version == live_dir.version
    assert root.root.orgs == len(live_dir.orgs)
    assert root.root.revoked == live_dir.revoked
    full = codec.decode_map(sign_directory(live_dir, world.hub_key), codec.DIRECTORY_FRAME_LIMITS)
    assert root.root.tree == dirtree.DirectoryTree.of(live_dir).root_hash()
    assert len(watch.messages[0][1]) < len(full["dir"])  # the root, not the directory


async def test_a_spoke_gets_the_entries_it_asks_for_proven_and_a_missing_one_proven_absent(
    hub: HubProcess, spokes_at: SpokeMaker, world: World, live_dir: Directory
) -> None:
    cc = spokes_at(hub, "jl.cc")
    await cc.connect()
    channel = cc.channels[0]
    async with Observer(hub.port, topics.dirroot(channel), topics.down(channel, "jl.cc")) as watch:
        await watch.wait_for(lambda: bool(roots(watch, world)))
        [root] = roots(watch, world)
        keys = ["jl.gov", "jl.cc", "jl.nowhere", dirtree.page_key(live_dir.groups[0].id)]
        ask = transport.DirGetMsg(7, root.version, dirtree.encode_ask(keys))
        await cc.publish_raw(transport.encode(ask))
        await watch.wait_for(lambda: bool(answers(watch)))
    [reply] = answers(watch)
    assert reply.ask == 7
    proven = verify_answer(reply.answer, root, keys)
    assert proven.refusal is None
    assert proven.root is None  # the spoke holds this version: no root again
    assert set(proven.entries) == {"jl.gov", "jl.cc", dirtree.page_key(live_dir.groups[0].id)}
    assert proven.entries["jl.gov"] == live_dir.org("jl.gov")
    assert proven.absent == {"jl.nowhere"}


async def test_a_request_that_names_no_valid_key_is_answered_with_a_refusal_not_dropped(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    cc = spokes_at(hub, "jl.cc")
    await cc.connect()
    channel = cc.channels[0]
    async with Observer(hub.port, topics.down(channel, "jl.cc")) as watch:
        bad = transport.DirGetMsg(1, 0, codec.encode(["../../etc/passwd"]))
        await cc.publish_raw(transport.encode(bad))
        await watch.wait_for(lambda: bool(answers(watch)))
    version, root, refusal, _ = dirtree.read_answer(answers(watch)[0].answer)
    assert refusal == "directory.bad_request"
    assert root is None  # a refusal carries no root: nothing a flood could amplify
    assert version >= 1
    logged = await wait_for_log(hub, lambda e: e.get("event") == "directory.bad_request")
    assert logged["org"] == "jl.cc"


async def test_after_a_reload_the_retained_root_carries_the_change_from_the_version_before(
    hub: HubProcess, world: World, live_dir: Directory
) -> None:
    channel = live_dir.channels[0].id
    async with Observer(hub.port, topics.dirroot(channel)) as before:
        await before.wait_for(lambda: bool(before.messages))
    [old] = roots(before, world)
    kid = world.keys["jl.cc"].signing.kid
    renamed = tuple(
        o.model_copy(update={"name_en": "Jilin Provincial Government"}) if o.id == "jl.gov" else o
        for o in live_dir.orgs
    )
    v2 = live_dir.model_copy(update={"version": 2, "revoked": (kid,), "orgs": renamed})
    replace_directory(hub, sign_directory(v2, world.hub_key))
    async with Observer(hub.port, topics.dirroot(channel)) as watch:
        hub.hup()
        await watch.wait_for(lambda: any(r.version == 2 for r in roots(watch, world)))
    payload = next(
        p for _, p, _ in watch.messages
        if verify_root(dirtree.read_publication(p)[0], world.hub_key.public, now=None).version == 2
    )  # fmt: skip
    root_frame, delta_frame = dirtree.read_publication(payload)
    new = verify_root(root_frame, world.hub_key.public, now=None, last_seen=(1, old.digest))
    assert kid in new.root.revoked  # a revocation reaches every spoke with the root itself
    assert delta_frame is not None
    delta = verify_delta(delta_frame, world.hub_key.public, new)
    assert (delta.prior, delta.prior_root) == (1, old.digest)
    assert delta.changed == ("jl.gov",)  # a revocation is in the root; one entry changed
