"""Fixtures for the hub's integration tests: real brokers, a real hubd process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from schemas.directory import Directory
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.spokesim import SimSpoke
from tests.world import World


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture(params=["embedded", "mosquitto"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def live_dir(world: World) -> Directory:
    return live_directory(world)


@pytest.fixture
def hub(
    broker_kind: str, world: World, live_dir: Directory, tmp_path: Path
) -> Iterator[HubProcess]:
    """A running hubd on the embedded broker or on a Mosquitto of its own."""
    broker = Mosquitto(tmp_path / "mosquitto").start() if broker_kind == "mosquitto" else None
    process = HubProcess(
        tmp_path / "hub",
        world.hub_key,
        live_dir,
        broker_port=None if broker is None else broker.port,
        extra_toml="[delivery]\nretry_initial = 1.0\nretry_max = 4.0\n",
    )
    process.start()
    yield process
    process.stop()
    if broker is not None:
        broker.stop()


SpokeFactory = Callable[..., SimSpoke]


@pytest.fixture
async def spokes(world: World, live_dir: Directory, hub: HubProcess) -> AsyncIterator[SpokeFactory]:
    """``spokes("jl.gov", channels=("govnet",))``: a connected simulated spoke."""
    async with AsyncExitStack() as stack:
        made: list[SimSpoke] = []

        def make(org: str, **kw: object) -> SimSpoke:
            spoke = SimSpoke(
                org,
                world.keys[org].signing,
                world.keys[org].encryption,
                live_dir,
                "127.0.0.1",
                hub.port,
                **kw,  # type: ignore[arg-type]
            )
            made.append(spoke)
            stack.push_async_callback(spoke.disconnect)
            return spoke

        yield make


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server (127.0.0.1:5432, trust auth)."""
    import secrets  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    name = f"govx_test_{secrets.token_hex(4)}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True)  # noqa: S603
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)  # noqa: S603
