"""Where hubd, hubctl and spoke find their configuration without --config
(runtime.configpath): the variable, then /etc/govxchg, then ./config, the first that
exists; none: one line in both languages naming every place tried."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import configpath
from runtime.configpath import HUB, SPOKE, ConfigNotFoundError
from schemas.errors import ConfigError


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty /etc/govxchg (under tmp_path), a working folder, neither variable set."""
    etc = tmp_path / "etc" / "govxchg"
    etc.mkdir(parents=True)
    monkeypatch.setattr(configpath, "SYSTEM_DIR", etc)
    monkeypatch.delenv(HUB.env, raising=False)
    monkeypatch.delenv(SPOKE.env, raising=False)
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    monkeypatch.chdir(work)
    return tmp_path


def put(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")
    return path


def test_an_explicit_config_is_taken_as_given_even_when_others_exist(places: Path) -> None:
    put(places / "etc" / "govxchg" / "hub.toml")
    put(places / "work" / "config" / "hub.toml")

    assert HUB.find(Path("mine.toml")) == Path("mine.toml")


def test_the_variable_comes_before_etc_and_the_working_folder(
    places: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = put(places / "elsewhere" / "hub.toml")
    put(places / "etc" / "govxchg" / "hub.toml")
    put(places / "work" / "config" / "hub.toml")
    monkeypatch.setenv("GOVXCHG_CONFIG", str(named))

    assert HUB.find(None) == named


def test_a_variable_naming_a_missing_file_is_an_error_not_a_fall_through(
    places: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Falling through would read another hub's configuration without a word."""
    put(places / "etc" / "govxchg" / "hub.toml")
    monkeypatch.setenv("GOVXCHG_CONFIG", str(places / "typo.toml"))

    with pytest.raises(ConfigNotFoundError) as caught:
        HUB.find(None)

    message = str(caught.value)
    assert "GOVXCHG_CONFIG" in message
    assert str(places / "typo.toml") in message
    with pytest.raises(ConfigNotFoundError):
        HUB.find_optional(None)


def test_etc_comes_before_the_working_folder(places: Path) -> None:
    system = put(places / "etc" / "govxchg" / "hub.toml")
    put(places / "work" / "config" / "hub.toml")

    assert HUB.find(None) == system


def test_the_working_folders_config_is_the_last_place(places: Path) -> None:
    put(places / "work" / "config" / "hub.toml")

    assert HUB.find(None) == Path("config/hub.toml")


def test_the_spoke_looks_for_its_own_file_and_variable(
    places: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(places / "etc" / "govxchg" / "hub.toml")
    spoke = put(places / "etc" / "govxchg" / "spoke.toml")

    assert SPOKE.find(None) == spoke
    named = put(places / "spoke-jl.cc.toml")
    monkeypatch.setenv("GOVXCHG_SPOKE_CONFIG", str(named))
    assert SPOKE.find(None) == named


def test_no_file_anywhere_is_one_line_in_both_languages_naming_the_three_places(
    places: Path,
) -> None:
    with pytest.raises(ConfigNotFoundError) as caught:
        HUB.find(None)

    message = str(caught.value)
    assert isinstance(caught.value, ConfigError)  # the CLIs' one-line family
    assert "\n" not in message
    assert "未找到枢纽配置文件" in message
    assert "$GOVXCHG_CONFIG is not set" in message
    assert str(places / "etc" / "govxchg" / "hub.toml") in message
    assert "./config/hub.toml" in message
    assert str(places / "work") in message  # which working folder ./config was in
    assert "give --config FILE" in message
    assert HUB.find_optional(None) is None


def test_the_help_text_lists_the_places_in_the_order_they_are_tried() -> None:
    assert HUB.help.index("$GOVXCHG_CONFIG") < HUB.help.index("/etc/govxchg/hub.toml")
    assert HUB.help.index("/etc/govxchg/hub.toml") < HUB.help.index("./config/hub.toml")
    assert "$GOVXCHG_SPOKE_CONFIG" in SPOKE.help
