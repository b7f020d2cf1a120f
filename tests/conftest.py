from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from runtime import startup
from tests.world import World, make_world


@pytest.fixture(scope="session")
def world() -> World:
    """The Jilin exchange with fresh keys; shared (read-only) by every test in the session."""
    return make_world()


@pytest.fixture(autouse=True)
def structlog_restored() -> Iterator[None]:
    """Every test leaves logging as it found it. A test that runs a command or a daemon's
    entry point in-process calls runtime.startup.configure, which is global: structlog's
    cached loggers would go on printing to that test's captured stdout, closed once it
    ends ("I/O operation on closed file" in whichever test logs next), and the standard
    library's root handler to its stderr."""
    saved, json_logs = structlog.get_config(), dict(startup._JSON_LOGS)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    startup._JSON_LOGS.update(json_logs)
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
