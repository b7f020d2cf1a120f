"""What a spoke holds of the directory (spoke.dirbook): the root it takes, the entries it
asks for when a document needs them, each proven; what a new version makes it ask again.

The hub's side is the hub's own code (hubd.engine.dirdesk answering from
schemas.dirtree), called in-process where the agent would publish on its up topic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hubd.engine.arrival import Arrival
from hubd.engine.dirdesk import DirectoryDesk, Served, build
from schemas import dirtree, transport
from schemas.directory import Directory, sign_directory, verify_directory
from schemas.errors import DirectoryError, Reason
from spoke.dirbook import DirectoryBook, DirectoryUnavailableError, needed
from spoke.state import SpokeState
from tests.world import NOW, World, make_world


class Hub:
    """The hub's directory desk, its answers handed straight to the book."""

    def __init__(self, world: World, directory: Directory) -> None:
        self.world = world
        self.desk = DirectoryDesk(self._send, key=world.hub_key)
        self.book: DirectoryBook | None = None
        self.asked: list[list[str]] = []
        self.answered_bytes = 0
        self.up = True
        self.serve(directory)

    def serve(self, directory: Directory) -> Served:
        frame = sign_directory(directory, self.world.hub_key)
        verified = verify_directory(frame, self.world.hub_key.public, now=None)
        self.desk.served = build(verified, self.world.hub_key, self.desk.served)
        return self.desk.served

    def _send(self, channel: str, org: str, payload: bytes) -> asyncio.Future[bool]:
        del channel, org
        self.answered_bytes += len(payload)
        message = transport.decode(payload)
        assert isinstance(message, transport.DirEntriesMsg)
        assert self.book is not None
        asyncio.get_running_loop().create_task(self.book.take_answer(message))
        sent: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        sent.set_result(True)
        return sent

    async def publish(self, payload: bytes) -> bool:
        """The agent's publish on its up topic: the hub reads the request."""
        if not self.up:
            return False
        message = transport.decode(payload)
        assert isinstance(message, transport.DirGetMsg)
        self.asked.append(dirtree.read_ask(message.keys))
        self.desk.answer_now(Arrival("govnet", "jl.gov", payload, NOW, 0), message)
        return True


@pytest.fixture
def world() -> World:
    return make_world()


async def taking(world: World, tmp_path: Path) -> tuple[Hub, DirectoryBook]:
    """A hub serving the world's directory, and a spoke's book that took its root."""
    hub = Hub(world, world.directory)
    book = book_for(world, hub, tmp_path)
    assert hub.desk.served is not None
    assert await book.take_publication(hub.desk.served.publication)
    return hub, book


def book_for(world: World, hub: Hub, tmp_path: Path) -> DirectoryBook:
    book = DirectoryBook(SpokeState(tmp_path / "state.db"), world.hub_key.public, lambda: NOW)
    book.publish = hub.publish
    hub.book = book
    return book


async def test_a_spoke_takes_the_root_then_only_the_entries_a_document_needs(
    world: World, tmp_path: Path
) -> None:
    hub = Hub(world, world.directory)
    book = book_for(world, hub, tmp_path)
    assert hub.desk.served is not None
    assert await book.take_publication(hub.desk.served.publication)
    assert book.entries == {}
    await book.closure(["jl.cc"], "jl.gov")
    lines = {"jl.gov", "jl.cc"} | set(world.directory.ancestors("jl.cc"))
    lines |= set(world.directory.ancestors("jl.gov"))
    assert set(book.entries) == lines  # the two and their lines, nothing else
    assert book.verified is not None
    assert book.verified.directory.org("jl.cc") == world.directory.org("jl.cc")
    assert len(book.entries) < len(world.directory.orgs)


async def test_a_group_brings_its_pages_and_its_members_with_their_lines(
    world: World, tmp_path: Path
) -> None:
    _hub, book = await taking(world, tmp_path)
    group = world.directory.groups[0]
    await book.closure([f"@{group.id}"], "jl.gov")
    assert book.verified is not None
    held = book.verified.directory
    held_group = held.group(group.id)
    assert held_group is not None
    assert held_group.members == group.members
    assert all(held.org(m) is not None for m in group.members)
    assert needed(book.entries, book.absent, [f"@{group.id}"], "jl.gov") == set()


async def test_an_address_not_listed_is_proven_absent_and_not_asked_again(
    world: World, tmp_path: Path
) -> None:
    hub, book = await taking(world, tmp_path)
    await book.closure(["jl.nowhere"], "jl.gov")
    asked = len(hub.asked)
    await book.closure(["jl.nowhere"], "jl.gov")
    assert "jl.nowhere" in book.absent
    assert len(hub.asked) == asked


async def test_a_new_version_with_its_change_asks_again_only_for_what_changed(
    world: World, tmp_path: Path
) -> None:
    hub, book = await taking(world, tmp_path)
    await book.closure(["jl.cc", "jl.jl"], "jl.gov")
    before = dict(book.entries)
    renamed = tuple(
        o.model_copy(update={"name_en": "Changchun (renamed)"}) if o.id == "jl.cc" else o
        for o in world.directory.orgs
    )
    served = hub.serve(world.directory.model_copy(update={"version": 2, "orgs": renamed}))
    hub.asked.clear()
    assert await book.take_publication(served.publication)
    assert book.stale == {"jl.cc"}  # used as it was until asked again ...
    await book.closure(["jl.cc"], "jl.gov")  # ... which a document does first
    assert hub.asked
    assert all(asked == ["jl.cc"] for asked in hub.asked)  # the change, nothing else
    cc = book.entries["jl.cc"]
    assert cc.name_en == "Changchun (renamed)"
    assert book.entries["jl.jl"] == before["jl.jl"]  # unchanged, not asked again
    assert book.stale == set()


async def test_a_version_without_a_change_it_can_use_asks_again_for_all_it_holds(
    world: World, tmp_path: Path
) -> None:
    hub, book = await taking(world, tmp_path)
    await book.closure(["jl.cc"], "jl.gov")
    held = set(book.entries)
    frame = hub.serve(world.directory.model_copy(update={"version": 3})).root_frame
    await book.take_publication(dirtree.publication(frame, None))  # a hub restarted since
    assert book.stale == held


async def test_an_older_root_is_refused_as_a_rollback(world: World, tmp_path: Path) -> None:
    hub = Hub(world, world.directory.model_copy(update={"version": 5}))
    book = book_for(world, hub, tmp_path)
    assert hub.desk.served is not None
    await book.take_publication(hub.desk.served.publication)
    older = Hub(world, world.directory.model_copy(update={"version": 4})).desk.served
    assert older is not None
    assert not await book.take_publication(older.publication)
    assert book.root is not None
    assert book.root.version == 5


async def test_without_a_connection_the_book_says_it_cannot_ask(
    world: World, tmp_path: Path
) -> None:
    hub, book = await taking(world, tmp_path)
    hub.up = False
    with pytest.raises(DirectoryUnavailableError):
        await book.closure(["jl.cc"], "jl.gov")


async def test_what_a_spoke_fetched_is_there_after_a_restart(world: World, tmp_path: Path) -> None:
    hub, book = await taking(world, tmp_path)
    await book.closure(["jl.cc"], "jl.gov")
    again = book_for(world, hub, tmp_path)
    again.load()
    assert set(again.entries) == set(book.entries)
    asked = len(hub.asked)
    await again.closure(["jl.cc"], "jl.gov")
    assert len(hub.asked) == asked


async def test_a_root_of_the_same_version_as_a_whole_directory_kept_before_must_name_it(
    world: World, tmp_path: Path
) -> None:
    """An upgraded spoke kept the whole directory of version 1: a root of version 1 must
    be that directory's (``full``), or it is equivocation."""
    state = SpokeState(tmp_path / "state.db")
    other = world.directory.model_copy(update={"revoked": ()})
    whole = sign_directory(world.directory.model_copy(update={"hub_id": "jl.hub2"}), world.hub_key)
    kept = verify_directory(whole, world.hub_key.public, now=None)
    state._tx(
        "INSERT INTO directory (id, version, digest, frame) VALUES (1, ?, ?, ?)",
        (kept.version, kept.digest, kept.frame),
    )
    hub = Hub(world, other)
    book = DirectoryBook(state, world.hub_key.public, lambda: NOW)
    book.publish = hub.publish
    hub.book = book
    assert hub.desk.served is not None
    assert not await book.take_publication(hub.desk.served.publication)
    with pytest.raises(DirectoryError) as refused:
        book._check_continuity(
            dirtree.verify_root(hub.desk.served.root_frame, world.hub_key.public, now=None)
        )
    assert refused.value.reason is Reason.DIR_EQUIVOCATION


async def test_entries_stale_under_a_root_without_a_change_stay_stale_after_a_restart(
    world: World, tmp_path: Path
) -> None:
    hub, book = await taking(world, tmp_path)
    await book.closure(["jl.cc"], "jl.gov")
    held = set(book.entries)
    hub.up = False  # the hub is away: nothing is asked again before the restart
    frame = hub.serve(world.directory.model_copy(update={"version": 3})).root_frame
    await book.take_publication(dirtree.publication(frame, None))
    again = book_for(world, hub, tmp_path)
    again.load()
    assert again.stale == held  # proven under version 1, the root is 3: asked again first


async def test_an_answer_proven_under_a_root_replaced_meanwhile_is_not_taken(
    world: World, tmp_path: Path
) -> None:
    hub, book = await taking(world, tmp_path)
    old = hub.desk.served
    assert old is not None
    late = asyncio.get_running_loop().create_future()
    book._asks[99] = (["jl.cc"], late)
    found, absent = old.tree.answer(["jl.cc"])
    stale_answer = transport.DirEntriesMsg(99, dirtree.encode_answer(1, None, found, absent))
    renamed = world.directory.model_copy(update={"version": 2})
    served = hub.serve(renamed)
    await book.take_publication(served.publication)  # version 2 before the answer to 1
    await book.take_answer(stale_answer)
    assert "jl.cc" not in book.entries
    assert late.done()
    assert late.exception() is not None  # asked again, against version 2


async def test_two_roots_taken_at_once_leave_the_newer(world: World, tmp_path: Path) -> None:
    hub = Hub(world, world.directory)
    book = book_for(world, hub, tmp_path)
    v2 = Hub(world, world.directory.model_copy(update={"version": 2})).desk.served
    v3 = Hub(world, world.directory.model_copy(update={"version": 3})).desk.served
    assert v2 is not None
    assert v3 is not None
    await asyncio.gather(
        book.take_publication(v3.publication), book.take_publication(v2.publication)
    )
    assert book.root is not None
    assert book.root.version == 3
    assert book.state.dir_root_seen() == (3, book.root.digest)


def test_a_directory_no_spoke_could_take_is_refused_with_the_limit(world: World) -> None:
    gov = world.directory.org("jl.gov")
    assert gov is not None
    many = tuple(o.id for o in world.directory.orgs) * 100
    wide = gov.model_copy(update={"directive_to": many[: dirtree.ENTRY_LIMITS.max_array + 1]})
    orgs = tuple(wide if o.id == "jl.gov" else o for o in world.directory.orgs)
    with pytest.raises(ValueError, match=r"jl\.gov lists 2049 directive_to.*at most 2048"):
        dirtree.check_servable(world.directory.model_copy(update={"orgs": orgs}))
    revoked = tuple(f"{i:016x}" for i in range(dirtree.ROOT_LIMITS.max_array + 1))
    with pytest.raises(ValueError, match=r"revokes 20001 key ids.*at most 20000"):
        dirtree.check_servable(world.directory.model_copy(update={"revoked": revoked}))
