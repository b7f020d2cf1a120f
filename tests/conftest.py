from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from runtime import startup
from tests.world import World, make_world


@pytest.fixture(scope="session")
def world() -> World:
    """The Jilin exchange with fresh keys; shared (read-only) by every test in the session."""
    return make_world()


@pytest.fixture
def structlog_restored() -> Iterator[None]:
    """A test that runs a daemon's entry point in-process (runtime.startup.configure is
    global) leaves structlog as it found it."""
    saved, json_logs = structlog.get_config(), dict(startup._JSON_LOGS)
    yield
    structlog.configure(**saved)
    startup._JSON_LOGS.update(json_logs)
