"""One error family: every exception this project defines descends from XchgError.

Callers (the CLIs, the spoke's drop guard, the hub's intake) catch the family to turn an
expected error into one line; an exception class outside it would surface as a traceback.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from schemas.errors import XchgError

PACKAGES = ("schemas", "runtime", "hubd", "spoke")
NOT_IMPORTED = ("__main__", ".migrations")  # running code, not definitions


def _modules() -> list[str]:
    names: list[str] = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        names.extend(
            info.name
            for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")
            if not any(part in info.name for part in NOT_IMPORTED)
        )
    return names


def _exceptions() -> list[type[BaseException]]:
    found = []
    for name in _modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException):
                found.append(cls)
    return found


def test_the_walk_finds_the_known_errors() -> None:
    names = {cls.__name__ for cls in _exceptions()}
    assert {"IllegalTransition", "RouteError", "Refusal", "MetadataError", "PeerError"} <= names


@pytest.mark.parametrize("cls", _exceptions(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_exception_the_project_defines_is_an_xchg_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, XchgError), f"{cls.__module__}.{cls.__name__} is outside the family"
