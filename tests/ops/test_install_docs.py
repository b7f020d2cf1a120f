"""docs/operations.md, "Installing on a Debian server", run as written: the folders, their
owners and modes, the hub key made by the service user, the directory, hub.toml; and the
one line an operator reads when the service user may not write the key folder (issue 13).

``/etc/govxchg``, ``/opt/govxchg``, ``/var/lib/govxchg`` and ``/usr/local/bin`` become folders
under a temporary root (a line that would still touch this machine fails the test), and the
service user ``govxchg`` is ``nobody`` (uid 65534), entered with ``setpriv``: the tests run
as root here, and a root process is never refused a folder.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from hubd.config import load_config
from schemas.directory import verify_directory
from schemas.keys import HubPublicKey
from tests.test_key_tools import ORGS, TOPOLOGY, keygen, ok
from tests.world import REPO

GUIDE = REPO / "docs" / "operations.md"
NOBODY = 65534
SETPRIV = shutil.which("setpriv")
VENV_BIN = Path(sys.executable).parent
AS_NOBODY = [str(SETPRIV), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]

# Lines of the install block this test does not run, and why: they change the machine
# (packages, users, systemd), or copy the repository this test runs from.
NOT_RUN = (
    "sudo apt-get install",  # packages
    "sudo useradd",  # the service user: nobody stands in for it
    "sudo cp -r . /opt/govxchg",  # this checkout is the installed copy
    "sudo cp config/systemd/hubd.service",  # systemd
    "sudo systemctl",
    "sudo usermod",
)


def _service_user_reaches_the_checkout() -> bool:
    """Whether uid 65534 may run this checkout's hubctl (not in a clone under a private
    folder such as ``mktemp -d``'s 0700 one)."""
    if os.geteuid() != 0 or SETPRIV is None:
        return False
    probe = [*AS_NOBODY, "test", "-r", str(VENV_BIN / "hubctl")]
    return subprocess.run(probe, check=False).returncode == 0  # noqa: S603


pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0 or SETPRIV is None,
        reason="needs root and setpriv: the service user's refusals are shown by dropping to "
        "uid 65534, and root alone can make folders owned by it",
    ),
    pytest.mark.skipif(
        not _service_user_reaches_the_checkout(),
        reason="uid 65534 cannot reach this checkout (a clone under a private folder): the "
        "service user could not run its hubctl; tests/test_runbooks.py runs the same block",
    ),
]


def install_block() -> list[str]:
    """The install section's shell block: continuation lines joined, comments kept."""
    section = GUIDE.read_text(encoding="utf-8").split("## Installing on a Debian server", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return block.replace("\\\n", " ").splitlines()


def commands() -> list[str]:
    return [line for line in install_block() if line.strip() and not line.startswith("#")]


def documented_hub_settings() -> dict[str, str]:
    """The [hub] values the block's comment tells the operator to set in hub.toml."""
    lines = install_block()
    start = next(i for i, line in enumerate(lines) if "then edit it:" in line)
    settings: dict[str, str] = {}
    for line in lines[start + 1 :]:
        if not line.startswith("#") or "[admin]" in line:
            break
        settings.update(re.findall(r'(\w+) = "([^"]+)"', line))
    return settings


@pytest.fixture
def root() -> Iterator[Path]:
    """A root nobody can enter (pytest's own temporary folders are 0700)."""
    made = Path(tempfile.mkdtemp(prefix="govxchg-install-"))
    made.chmod(0o755)
    (made / "usr" / "local" / "bin").mkdir(parents=True)  # the block links the commands there
    yield made
    shutil.rmtree(made)


def as_written(command: str, root: Path) -> list[str]:
    """The guide's line for this machine: paths under ``root``, nobody as govxchg."""
    command = command.replace("/opt/govxchg/.venv/bin/", f"{VENV_BIN}/")
    command = command.replace("/etc/govxchg", f"{root}/etc/govxchg")
    command = command.replace("/opt/govxchg", f"{root}/opt/govxchg")
    command = command.replace("/var/lib/govxchg", f"{root}/var/lib/govxchg")
    command = command.replace("/usr/local/bin", f"{root}/usr/local/bin")
    outside = re.findall(r"(?<![\w./-])/(?:etc|opt|var|usr|run)/\S*", command)
    assert not outside, f"the guide's line would touch this machine: {outside} in {command}"
    command = re.sub(r"(-[og]) govxchg\b", rf"\1 {NOBODY}", command)
    if command.startswith("sudo -u govxchg "):  # one command, no shell: setpriv runs it
        return [*AS_NOBODY, *shlex.split(command.removeprefix("sudo -u govxchg "))]
    return ["bash", "-c", command.removeprefix("sudo ")]


def run(argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the guide's own lines
        argv, cwd=REPO, capture_output=True, text=True, check=False, env=env
    )


def perform(argv: list[str]) -> tuple[int, str]:
    """A line as root: hubctl in this process (the lean way), anything else through bash."""
    words = shlex.split(argv[-1]) if argv[:2] == ["bash", "-c"] else []
    if words and words[0] == f"{VENV_BIN}/hubctl":
        result = CliRunner().invoke(hubctl_app, words[1:])
        return result.exit_code, result.output
    done = run(argv)
    return done.returncode, done.stderr


def collect_public_keys(root: Path) -> None:
    """The block's comment step: organisations' ORG.pub.json and the topology in place."""
    etc = root / "etc" / "govxchg"
    (etc / "orgs").mkdir()
    for org in ORGS:
        ok(keygen(org, root / "spokes" / org))
        shutil.copyfile(root / "spokes" / org / f"{org}.pub.json", etc / "orgs" / f"{org}.pub.json")
    (etc / "topology.toml").write_text(TOPOLOGY, encoding="utf-8")


def edit_hub_toml(path: Path, root: Path) -> None:
    """What the comment says to set in [hub], with /var/lib/govxchg under ``root``."""
    text = path.read_text(encoding="utf-8")
    for key, documented in documented_hub_settings().items():
        value = documented.replace("/var/lib/govxchg", f"{root}/var/lib/govxchg")
        line = f'{key} = "{value}"'
        text, n = re.subn(rf'^{key} = "[^"]*"', line, text, count=1, flags=re.MULTILINE)
        assert n == 1, f"config/hub.toml has no {key} line to set"
    path.write_text(text, encoding="utf-8")


def test_every_line_of_the_install_block_is_run_here_or_named_as_not_run() -> None:
    for command in commands():
        runs = any(word in command for word in ("/etc/govxchg", "/opt/govxchg"))
        assert runs or command.startswith(NOT_RUN), command


def test_the_install_block_runs_as_written_and_leaves_the_documented_owners_and_modes(
    root: Path,
) -> None:
    collected = False
    for command in commands():
        if command.startswith(NOT_RUN):
            continue
        if "hubctl directory build" in command and not collected:
            collect_public_keys(root)
            collected = True
        code, output = perform(as_written(command, root))
        assert code == 0, (command, output)
    etc = root / "etc" / "govxchg"
    edit_hub_toml(etc / "hub.toml", root)

    hub = etc / "hub"
    assert (hub.stat().st_uid, stat.S_IMODE(hub.stat().st_mode)) == (NOBODY, 0o750)
    key = hub / "hub.sign.key"
    assert (key.stat().st_uid, stat.S_IMODE(key.stat().st_mode)) == (NOBODY, 0o600)
    assert stat.S_IMODE((hub / "hub.pub.json").stat().st_mode) == 0o644
    toml = etc / "hub.toml"
    assert (toml.stat().st_gid, stat.S_IMODE(toml.stat().st_mode)) == (NOBODY, 0o640)
    pinned = HubPublicKey.load((hub / "hub.pub.json").read_bytes(), source="hub.pub.json")
    assert verify_directory((hub / "directory.bin").read_bytes(), pinned.public, now=None)
    settings = load_config(toml)
    assert settings.hub.key == key
    assert settings.hub.directory == hub / "directory.bin"
    assert settings.hub.org_keys == etc / "orgs"
    assert settings.hub.topology == etc / "topology.toml"

    # the guide's next line: with hub.toml in place, "sudo hubctl directory build" is enough
    # (GOVXCHG_CONFIG stands in for /etc/govxchg/hub.toml)
    text = " ".join(GUIDE.read_text(encoding="utf-8").split())
    assert "`sudo hubctl directory build` is enough" in text
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GOVXCHG_CONFIG", str(toml))
        result = CliRunner().invoke(hubctl_app, ["directory", "build"])
    assert result.exit_code == 0, result.output
    assert "directory v2" in result.output
    # ... and the service user reads what it needs through its group and ownership
    env = {**os.environ, "GOVXCHG_CONFIG": str(toml)}
    done = run([*AS_NOBODY, f"{VENV_BIN}/hubctl", "keys", "list", "--json"], env=env)
    assert done.returncode == 0, done.stderr


def keys_init_as_service_user(root: Path) -> subprocess.CompletedProcess[str]:
    """The guide's 'sudo -u govxchg hubctl keys init --out /etc/govxchg/hub'."""
    line = next(c for c in commands() if "hubctl keys init --out /etc/govxchg/hub" in c)
    return run(as_written(line, root))


def test_keys_init_as_the_service_user_without_its_folder_says_how_to_make_it(
    root: Path,
) -> None:
    """The old guide: 'mkdir -p /etc/govxchg' by root, then keys init as govxchg."""
    etc = root / "etc" / "govxchg"
    etc.mkdir(parents=True, mode=0o755)

    done = keys_init_as_service_user(root)

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # one line, no traceback
    line = lines[0]
    assert "Errno" not in line
    assert f"无权在目录 {etc} 中写入" in line
    assert f"the folder {etc} is owned by root:root with mode 0755" in line
    assert "nobody (uid 65534), who runs this, may not write in it" in line
    assert f"as root run: install -d -o nobody -g nogroup -m 0750 {etc / 'hub'}" in line
    assert not (etc / "hub").exists()


def test_keys_init_as_the_service_user_into_roots_folder_says_chown_it(root: Path) -> None:
    hub = root / "etc" / "govxchg" / "hub"
    hub.mkdir(parents=True)
    hub.chmod(0o755)

    done = keys_init_as_service_user(root)

    assert done.returncode == 2
    line = done.stderr.strip()
    assert "\n" not in line
    assert f"the folder {hub} is owned by root:root with mode 0755" in line
    assert f"as root run: chown nobody: {hub}" in line
    assert "docs/operations.md, Installing on a Debian server" in line
    assert list(hub.iterdir()) == []
