"""The spoke's [channels.NAME]: one broker (url) or the nodes of a clustered one (urls).

Each mistake is written to a real file and read by spoke.config.load_config, so the
ConfigError is checked for what an operator reads: the file, the key path, the value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ConfigError
from spoke.config import load_config
from tests.world import REPO

SPOKE = """
[spoke]
org = "jl.cc"
root = "root"
sign_key = "jl.cc.sign.key"
enc_key = "jl.cc.enc.key"
hub_key = "hub.pub.json"
"""


def write(tmp_path: Path, channels: str) -> Path:
    path = tmp_path / "etc" / "spoke.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SPOKE + channels, encoding="utf-8")
    return path


def test_the_example_configuration_loads_with_its_single_url() -> None:
    config = load_config(REPO / "config" / "spoke.example.toml")

    broker = config.channels["govnet"]
    assert broker.url == "mqtts://govnet-broker.example:8883"
    assert broker.nodes == (("govnet-broker.example", 8883),)


def test_the_examples_commented_node_list_loads_in_place_of_its_url(tmp_path: Path) -> None:
    text = (REPO / "config" / "spoke.example.toml").read_text(encoding="utf-8")
    [urls] = [line for line in text.splitlines() if line.startswith("# urls = ")]
    text = text.replace('url = "mqtts://govnet-broker.example:8883"\n', "")
    path = tmp_path / "spoke.toml"
    path.write_text(text.replace(urls, urls.removeprefix("# ")), encoding="utf-8")

    broker = load_config(path).channels["govnet"]

    assert broker.url is None
    assert broker.nodes == (("govnet-n1.example", 8883), ("govnet-n2.example", 8883))


def test_a_node_list_loads_in_the_order_written_with_its_tls_files_resolved(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        '[channels.govnet]\nurls = ["mqtts://n2.example:8883", "mqtts://n1.example"]\n'
        'ca = "ca.pem"\ncert = "c.pem"\nkey = "c.key"\n',
    )

    broker = load_config(path).channels["govnet"]

    assert broker.nodes == (("n2.example", 8883), ("n1.example", 8883))
    assert broker.tls
    assert broker.ca == tmp_path / "etc" / "ca.pem"
    assert broker.key == tmp_path / "etc" / "c.key"


MISTAKES = [
    pytest.param(
        '[channels.govnet]\nurl = "mqtt://a:1883"\nurls = ["mqtt://b:1883"]\n',
        "channels.govnet",
        "url = 'mqtt://a:1883' 与 urls = ['mqtt://b:1883'] 只能写一个",
        id="url-and-urls",
    ),
    pytest.param("[channels.govnet]\nurls = []\n", "channels.govnet.urls", "empty", id="empty"),
    pytest.param(
        '[channels.govnet]\nurls = ["mqtts://a", "mqtts://a:8883"]\n',
        "channels.govnet.urls",
        "the same node mqtts://a:8883",
        id="duplicate",
    ),
    pytest.param(
        '[channels.govnet]\nurls = ["mqtt://a:1883", "mqtts://b:8883"]\n',
        "channels.govnet.urls",
        "mixes mqtt:// and mqtts://",
        id="mixed-tls",
    ),
    pytest.param(
        '[channels.govnet]\nurls = ["mqtt://a:1883", "mqtt://b:0"]\n',
        "channels.govnet.urls",
        "'mqtt://b:0' is not an mqtt://",
        id="bad-node",
    ),
    pytest.param('[channels.govnet]\ncert = "c.pem"\n', "channels.govnet", "缺少 url", id="none"),
    pytest.param("[channels]\n", "channels", "url or urls", id="no-channel"),
]


@pytest.mark.parametrize(("channels", "key_path", "hint"), MISTAKES)
def test_a_wrong_broker_is_a_config_error_naming_the_key_and_the_value(
    tmp_path: Path, channels: str, key_path: str, hint: str
) -> None:
    path = write(tmp_path, channels)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    line = next(line for line in str(caught.value).splitlines() if f": {key_path}: " in line)
    assert line.startswith(f"{path}: {key_path}: ")
    assert hint in line
