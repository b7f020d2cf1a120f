"""The hub's configuration file (hubd.config.load_config) and the broker connection plan.

Each mistake is written to a real file in tmp_path, so the ConfigError is checked for
what an operator reads: the file, the key path and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hubd.config import HubConfig, load_config
from hubd.engine.brokerplan import BrokerPlan, plan_brokers
from runtime.brokers import BrokerURL
from schemas.errors import ConfigError
from tests.world import REPO

REPO_CONFIG = REPO / "config" / "hub.toml"


def write(tmp_path: Path, body: str, name: str = "hub.toml") -> Path:
    path = tmp_path / "etc" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- loading


def test_the_repository_configuration_loads() -> None:
    config = load_config(REPO_CONFIG)

    assert config.hub.topology == REPO / "config" / "topology.toml"
    assert config.hub.org_keys == REPO / "certs" / "orgs"
    assert config.hub.state_dir == REPO / "state"
    assert config.broker.enabled
    assert (config.broker.host, config.broker.port) == ("127.0.0.1", 11883)
    assert config.channels == {}
    assert config.store_url() == f"sqlite+aiosqlite:///{REPO / 'state' / 'hub.db'}"


def test_relative_paths_resolve_against_the_files_folder_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(
        tmp_path,
        """
[hub]
topology = "topology.toml"
directory = "../certs/directory.bin"
key = "/abs/hub.sign.key"
org_keys = "orgs"
state_dir = "state"

[channels.classified]
url = "mqtts://classified.example:8883"
ca = "tls/ca.pem"
cert = "../tls/hub.pem"
""",
    )

    config = load_config(path)

    etc = tmp_path / "etc"
    assert config.hub.topology == etc / "topology.toml"
    assert config.hub.directory == tmp_path / "certs" / "directory.bin"  # '..' resolved
    assert config.hub.key == Path("/abs/hub.sign.key")  # absolute paths stay
    assert config.hub.org_keys == etc / "orgs"
    assert config.hub.state_dir == etc / "state"
    assert config.store_url() == f"sqlite+aiosqlite:///{etc / 'state' / 'hub.db'}"
    assert config.spool_dir() == etc / "state" / "spool"
    broker = config.channels["classified"]
    assert broker.ca == etc / "tls" / "ca.pem"
    assert broker.cert == tmp_path / "tls" / "hub.pem"
    assert broker.key is None


def test_an_empty_file_gives_the_defaults_resolved_against_its_folder(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))

    assert config.hub.state_dir == tmp_path / "state"
    assert config.delivery.max_attempts == 30
    assert config.lifecycle.watchdog


def test_relative_sqlite_store_path_is_not_left_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Either resolved against the file's folder, like every other path, or refused."""
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, '[hub]\nstore = "sqlite+aiosqlite:///db/hub.db"\n')

    refused: list[str] = []
    try:
        url = load_config(path).store_url()
    except ConfigError as exc:
        refused, url = [p for p, _ in exc.problems], ""

    if refused:
        assert "hub.store" in refused
    else:
        assert url == f"sqlite+aiosqlite:///{tmp_path / 'etc' / 'db' / 'hub.db'}"


def test_the_admin_socket_defaults_to_the_state_folder_and_resolves_like_every_path(
    tmp_path: Path,
) -> None:
    default = load_config(write(tmp_path, ""))
    moved = load_config(write(tmp_path, '[admin]\nsocket = "run/hubd.sock"\n', "moved.toml"))
    off = load_config(write(tmp_path, "[admin]\nenabled = false\n", "off.toml"))

    assert default.admin_socket() == tmp_path / "state" / "hubd.sock"
    assert default.lock_file() == tmp_path / "state" / "hubd.lock"
    assert moved.admin_socket() == tmp_path / "etc" / "run" / "hubd.sock"
    assert off.admin_socket() is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400.0), ("12h", 43200.0), ("15m", 900.0), ("10s", 10.0), ("500ms", 0.5),
     ("1.5h", 5400.0), ("90", 90.0)],
)  # fmt: skip
def test_retention_periods_are_written_with_a_unit_or_as_seconds(
    tmp_path: Path, text: str, seconds: float
) -> None:
    value = f'"{text}"' if not text.isdigit() else text
    config = load_config(
        write(tmp_path, f'[retention]\ndelivered_after = {value}\ndead_after = "60d"\n')
    )

    assert config.retention.delivered_after == seconds


def test_retention_defaults_keep_dead_letters_longer_than_delivered_content(
    tmp_path: Path,
) -> None:
    retention = load_config(write(tmp_path, "")).retention

    assert retention.enabled
    assert (retention.delivered_after, retention.dead_after) == (30 * 86400.0, 90 * 86400.0)


def test_store_url_given_in_the_file_is_used_as_is(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://hubd@127.0.0.1:5432/hubd"
    config = load_config(write(tmp_path, f'[hub]\nstore = "{url}"\n'))

    assert config.store_url() == url


# ---------------------------------------------------------------------------- mistakes

MISTAKES = [
    pytest.param(
        '[retention]\ndelivered_after = "30 days"\n',
        "retention.delivered_after",
        "'30 days' is not a duration",
        id="duration-words",
    ),
    pytest.param(
        "[retention]\ninterval = 0\n", "retention.interval", "greater than 0", id="interval-0"
    ),
    pytest.param(
        '[retention]\ndelivered_after = "30d"\ndead_after = "1d"\n',
        "retention",
        "dead letter an operator may redeliver",
        id="dead-shorter",
    ),
    pytest.param(
        f'[admin]\nsocket = "/run/{"x" * 120}.sock"\n',
        "admin.socket",
        "at most 107",
        id="socket-too-long",
    ),
    pytest.param('[hub]\nstore = "mysql://hubd@db/hubd"\n', "hub.store", "sqlite", id="store-url"),
    pytest.param('[hub]\nstore = "sqlite:///hub.db"\n', "hub.store", "aiosqlite", id="sync-sqlite"),
    # an in-memory database would acknowledge documents and lose them on restart
    pytest.param('[hub]\nstore = "sqlite+aiosqlite://"\n', "hub.store", "", id="memory-sqlite"),
    pytest.param(
        '[hub]\nstore = "sqlite+aiosqlite:///:memory:"\n', "hub.store", "", id="memory-sqlite-2"
    ),
    pytest.param('[hub]\nstate_dri = "state"\n', "hub.state_dri", "xtra", id="unknown-key"),
    pytest.param("[brokers]\nenabled = true\n", "brokers", "xtra", id="unknown-section"),
    pytest.param(
        '[broker]\nlisten = "localhost"\n', "broker.listen", "HOST:PORT", id="listen-no-port"
    ),
    pytest.param('[broker]\nlisten = ":1883"\n', "broker.listen", "HOST:PORT", id="listen-no-host"),
    pytest.param(
        '[broker]\nlisten = "127.0.0.1:70000"\n', "broker.listen", "HOST:PORT", id="port-range"
    ),
    pytest.param(
        '[channels.govnet]\nurl = "http://broker.example:1883"\n',
        "channels.govnet.url",
        "mqtt://",
        id="broker-scheme",
    ),
    pytest.param(
        '[channels.govnet]\nurl = "mqtt://:1883"\n',
        "channels.govnet.url",
        "mqtt://",
        id="broker-no-host",
    ),
    pytest.param(
        '[channels.govnet]\nurl = "mqtt://b.example:99999"\n',
        "channels.govnet.url",
        "99999",
        id="broker-port-range",
    ),
    pytest.param(
        '[channels.govnet]\nurl = "mqtts://b.example:tls"\n',
        "channels.govnet.url",
        "tls",
        id="broker-port-word",
    ),
    pytest.param(
        '[channels.govnet]\nurl = "mqtt://b:1883"\nca = "x"\ntls = true\n',
        "channels.govnet.tls",
        "xtra",
        id="unknown-broker-key",
    ),
    pytest.param(
        '[channels."gov/net"]\nurl = "mqtt://b:1883"\n', "channels.gov/net", "'/'", id="channel-id"
    ),
    pytest.param(
        '[channels.govnet]\nurl = "mqtt://a:1883"\nurls = ["mqtt://b:1883"]\n',
        "channels.govnet",
        "'mqtt://a:1883'",
        id="url-and-urls",
    ),
    pytest.param(
        "[channels.govnet]\nurls = []\n", "channels.govnet.urls", "urls = []", id="urls-empty"
    ),
    pytest.param(
        '[channels.govnet]\nurls = ["mqtt://a:1883", "mqtt://a"]\n',
        "channels.govnet.urls",
        "'mqtt://a:1883' and 'mqtt://a'",
        id="urls-duplicate",
    ),
    pytest.param(
        '[channels.govnet]\nurls = ["mqtts://a:8883", "mqtt://b:1883"]\n',
        "channels.govnet.urls",
        "['mqtts://a:8883', 'mqtt://b:1883'] 混用了 mqtt:// 与 mqtts://",
        id="urls-mixed-tls",
    ),
    pytest.param(
        '[channels.govnet]\nurls = ["mqtt://a:1883", "http://b:1883"]\n',
        "channels.govnet.urls",
        "'http://b:1883' is not an mqtt://",
        id="urls-bad-node",
    ),
    pytest.param(
        '[channels.govnet]\nurls = "mqtt://a:1883"\n',
        "channels.govnet.urls",
        "tuple",
        id="urls-str",
    ),
    pytest.param('[channels.govnet]\nca = "ca.pem"\n', "channels.govnet", "url", id="no-url"),
    pytest.param(
        '[channels.govnet]\nurls = ["mqtt://a:1883", "mqtt://b:1883"]\n'
        '[channels.internet]\nurls = ["mqtt://b:1883", "mqtt://c:1883"]\n',
        "channels",
        "channel internet names ['mqtt://b:1883', 'mqtt://c:1883'] and channel govnet",
        id="urls-overlap",
    ),
    pytest.param(
        '[channels.govnet]\nurls = ["mqtt://a:1883", "mqtt://b:1883"]\n'
        '[channels.internet]\nurl = "mqtt://b"\n',
        "channels",
        "channel internet names 'mqtt://b'",
        id="url-inside-urls",
    ),
    pytest.param(
        '[channels.govnet]\nurls = ["mqtt://a:1883", "mqtt://b:1883"]\n'
        '[channels.internet]\nurls = ["mqtt://b:1883", "mqtt://a:1883"]\n',
        "channels",
        "same order",
        id="urls-other-order",
    ),
    pytest.param("[delivery]\nmax_attempts = 0\n", "delivery.max_attempts", "1", id="attempts"),
    pytest.param("[delivery]\nretry_initial = -1\n", "delivery.retry_initial", "0", id="negative"),
    pytest.param('[logging]\nformat = "xml"\n', "logging.format", "json", id="log-format"),
]


@pytest.mark.parametrize(("body", "key_path", "hint"), MISTAKES)
def test_mistake_is_a_config_error_naming_the_file_and_the_key_path(
    tmp_path: Path, body: str, key_path: str, hint: str
) -> None:
    path = write(tmp_path, body)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    error = caught.value
    assert error.source == str(path)
    # pydantic may add a last level for dict keys ("channels.gov/net.[key]")
    named = [p for p, _ in error.problems if p == key_path or p.startswith(f"{key_path}.")]
    assert named, error.problems
    line = next(line for line in str(error).splitlines() if f": {named[0]}: " in line)
    assert line.startswith(f"{path}: {key_path}")
    assert hint in line


def test_every_mistake_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[hub]\nstore = "mysql://x"\n[broker]\nlisten = "nope"\n'
        '[channels.govnet]\nurl = "ftp://b"\n',
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    paths = {p for p, _ in caught.value.problems}
    assert {"hub.store", "broker.listen", "channels.govnet.url"} <= paths


def test_a_file_that_is_not_toml_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "[hub\nstore = ")

    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "hub.toml"

    with pytest.raises(ConfigError, match="cannot read it") as caught:
        load_config(path)
    assert str(path) in str(caught.value)


# ---------------------------------------------------------------------------- broker plan


def config(body: str, tmp_path: Path) -> HubConfig:
    return load_config(write(tmp_path, body))


def by_channels(plans: list[BrokerPlan]) -> dict[tuple[str, ...], BrokerPlan]:
    return {tuple(p.channels): p for p in plans}


def test_channels_without_a_url_share_the_embedded_broker(tmp_path: Path) -> None:
    settings = config('[broker]\nlisten = "127.0.0.1:18830"\n', tmp_path)

    plans = plan_brokers(settings, ["internet", "govnet", "classified"])

    assert plans == [
        BrokerPlan(
            "embedded", "127.0.0.1", 18830, ["internet", "govnet", "classified"], False, None,
            None, None,
        )
    ]  # fmt: skip


def test_channels_sharing_one_broker_url_share_one_connection(tmp_path: Path) -> None:
    settings = config(
        """
[channels.govnet]
url = "mqtts://gov.example:8883"
ca = "ca.pem"
[channels.internet]
url = "mqtts://gov.example"
ca = "ca.pem"
[channels.classified]
url = "mqtts://secret.example:8883"
cert = "hub.pem"
key = "hub.key"
""",
        tmp_path,
    )

    plans = plan_brokers(settings, ["internet", "govnet", "classified", "core"])

    assert len(plans) == 3
    shared = by_channels(plans)[("internet", "govnet")]  # the same broker written two ways
    assert (shared.host, shared.port, shared.tls) == ("gov.example", 8883, True)
    assert shared.ca == str(tmp_path / "etc" / "ca.pem")
    secret = by_channels(plans)[("classified",)]
    assert (secret.host, secret.port, secret.tls) == ("secret.example", 8883, True)
    assert secret.cert == str(tmp_path / "etc" / "hub.pem")
    assert secret.key == str(tmp_path / "etc" / "hub.key")
    embedded = by_channels(plans)[("core",)]
    assert embedded.name == "embedded"
    assert not embedded.tls


def test_different_broker_urls_get_their_own_connections(tmp_path: Path) -> None:
    settings = config(
        '[channels.govnet]\nurl = "mqtt://b.example:1883"\n'
        '[channels.classified]\nurl = "mqtt://b.example:1884"\n'
        '[channels.core]\nurl = "mqtts://b.example:1883"\n',
        tmp_path,
    )

    plans = plan_brokers(settings, ["govnet", "classified", "core"])

    assert sorted((p.port, p.tls, tuple(p.channels)) for p in plans) == [
        (1883, False, ("govnet",)),
        (1883, True, ("core",)),
        (1884, False, ("classified",)),
    ]
    assert len({p.name for p in plans}) == 3


def test_without_the_embedded_broker_a_channel_without_url_is_a_config_error(
    tmp_path: Path,
) -> None:
    settings = config(
        '[broker]\nenabled = false\n[channels.govnet]\nurl = "mqtt://b.example:1883"\n', tmp_path
    )

    assert [p.channels for p in plan_brokers(settings, ["govnet"])] == [["govnet"]]
    with pytest.raises(ConfigError) as caught:
        plan_brokers(settings, ["govnet", "classified"])
    assert [p for p, _ in caught.value.problems] == ["channels.classified"]
    assert "url" in str(caught.value)


def test_broker_identity_ignores_everything_but_scheme_host_and_port() -> None:
    plain = BrokerURL(url="mqtt://b.example")
    assert plain.identity == BrokerURL(url="mqtt://b.example:1883/").identity
    assert plain.identity != BrokerURL(url="mqtts://b.example").identity
    assert BrokerURL(url="mqtts://b.example").port == 8883


# ---------------------------------------------------------------------------- node lists


def test_a_node_list_is_one_connection_trying_the_nodes_in_the_order_written(
    tmp_path: Path,
) -> None:
    settings = config(
        """
[channels.govnet]
urls = ["mqtts://n1.example", "mqtts://n2.example:8884", "mqtts://n3.example:8883"]
ca = "ca.pem"
[channels.internet]
urls = ["mqtts://n1.example:8883", "mqtts://n2.example:8884", "mqtts://n3.example"]
ca = "ca.pem"
[channels.classified]
urls = ["mqtt://s1.example:1883"]
""",
        tmp_path,
    )

    plans = by_channels(plan_brokers(settings, ["govnet", "internet", "classified"]))

    shared = plans[("govnet", "internet")]  # the same nodes written two ways: one connection
    assert (shared.host, shared.port, shared.tls) == ("n1.example", 8883, True)
    assert shared.failover == (("n2.example", 8884), ("n3.example", 8883))
    assert shared.name == "mqtts://n1.example:8883,mqtts://n2.example:8884,mqtts://n3.example:8883"
    assert shared.client_tag == "mqtts-n1.example-8883"  # the first node: unique to this list
    assert shared.ca == str(tmp_path / "etc" / "ca.pem")
    alone = plans[("classified",)]  # a list of one node is that node, as url gives it
    assert (alone.name, alone.failover) == ("mqtt://s1.example:1883", ())


def test_a_single_url_plans_as_it_always_did(tmp_path: Path) -> None:
    settings = config('[channels.govnet]\nurl = "mqtt://b.example"\n', tmp_path)

    [plan] = plan_brokers(settings, ["govnet"])

    assert plan == BrokerPlan(
        "mqtt://b.example:1883", "b.example", 1883, ["govnet"], False, None, None, None
    )
    assert plan.client_tag == "mqtt-b.example-1883"  # the hub's client id is unchanged


def test_a_node_list_keeps_its_order_and_names_each_node() -> None:
    broker = BrokerURL(urls=("mqtt://b.example", "mqtt://a.example:1884"))

    assert broker.nodes == (("b.example", 1883), ("a.example", 1884))
    assert broker.node_identities == ("mqtt://b.example:1883", "mqtt://a.example:1884")
    assert (broker.host, broker.port, broker.tls) == ("b.example", 1883, False)
    assert broker.identity != BrokerURL(urls=("mqtt://a.example:1884", "mqtt://b.example")).identity
    one = BrokerURL(urls=("mqtt://b.example",))
    assert one.identity == BrokerURL(url="mqtt://b.example:1883").identity


def test_the_guides_node_list_example_loads_as_one_broker_of_three_nodes(tmp_path: Path) -> None:
    guide = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    section = guide.split("### A channel on a clustered broker", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]

    settings = config(example, tmp_path)

    [plan] = plan_brokers(settings, ["govnet"])
    assert (plan.host, plan.port, plan.tls) == ("govnet-n1.example", 8883, True)
    assert plan.failover == (("govnet-n2.example", 8883), ("govnet-n3.example", 8883))
    assert plan.cert == "/etc/govxchg/hub-govnet.pem"


def test_the_repository_configurations_commented_channel_loads_with_its_node_list(
    tmp_path: Path,
) -> None:
    lines = REPO_CONFIG.read_text(encoding="utf-8").splitlines()
    start = lines.index("# [channels.govnet]")
    block = [line.removeprefix("# ") for line in lines[start : start + 9] if line.startswith("# ")]
    body = "\n".join(line for line in block if not line.startswith(("url ", "A ", "goes ")))

    settings = config(body, tmp_path)

    broker = settings.channels["govnet"]
    assert broker.nodes == (("govnet-n1.example", 8883), ("govnet-n2.example", 8883))
    assert broker.cert == Path("/etc/govxchg/hub-govnet.pem")


# ---------------------------------------------------------------------------- replicas

PG = 'store = "postgresql+asyncpg://hub@db.example/xchg"'
ON_A_BROKER = '[channels.govnet]\nurl = "mqtt://10.0.0.5:1883"\n'


def test_replicas_are_off_unless_enabled_and_their_lease_settings_load(tmp_path: Path) -> None:
    assert not load_config(write(tmp_path, "")).replicas.enabled
    body = f'[hub]\n{PG}\n{ON_A_BROKER}\n[replicas]\nenabled = true\nname = "a"\nlease = 4\n'
    replicas = load_config(write(tmp_path, body)).replicas
    assert (replicas.enabled, replicas.name, replicas.lease, replicas.renew) == (
        True,
        "a",
        4.0,
        1.0,
    )


@pytest.mark.parametrize(
    ("body", "names"),
    [
        # SQLite cannot be shared by processes on several machines
        (f"{ON_A_BROKER}\n[replicas]\nenabled = true\n", ("PostgreSQL", "hub.store")),
        # each replica would run an embedded broker of its own
        (f"[hub]\n{PG}\n[replicas]\nenabled = true\n", ("external broker", "[channels]")),
        # one slow round would lose the lease
        (
            f"[hub]\n{PG}\n{ON_A_BROKER}\n[replicas]\nenabled = true\nlease = 1.5\nrenew = 1\n",
            ("two renewals", "lease (1.5 s)"),
        ),
        # a name that could not go into a client id or a replica id
        (f'[hub]\n{PG}\n{ON_A_BROKER}\n[replicas]\nenabled = true\nname = "a b"\n', ("name",)),
        # each replica would open the member hub's uplink under its id (hubs under hubs)
        (
            (
                f"[hub]\n{PG}\n{ON_A_BROKER}\n[replicas]\nenabled = true\n"
                '[upstream.channels.govnet]\nurl = "mqtt://10.0.0.9:1883"\n'
            ),
            ("[upstream]", "without [replicas]"),
        ),
    ],
)
def test_a_replica_setting_that_cannot_work_is_refused_with_what_to_change(
    tmp_path: Path, body: str, names: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, body))
    text = str(caught.value)
    assert all(name in text for name in names), text


def test_a_member_hubs_upstream_brokers_load_with_their_tls_files_made_absolute(
    tmp_path: Path,
) -> None:
    body = (
        "[upstream]\nhello_every = 5\n[upstream.channels.classified]\n"
        'url = "mqtts://classified.cn-hub.example:8883"\nca = "national-ca.pem"\n'
        'cert = "jl.hub.pem"\nkey = "jl.hub.key"\n'
    )
    upstream = load_config(write(tmp_path, body)).upstream
    broker = upstream.channels["classified"]
    assert upstream.hello_every == 5.0
    assert (broker.host, broker.port, broker.tls) == ("classified.cn-hub.example", 8883, True)
    assert broker.ca is not None
    assert broker.ca.is_absolute()
