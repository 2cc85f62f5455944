"""Only edge_gateway/qos2link.py reaches into paho's (and aiomqtt's) private attributes, and each
such line says why (``# paho-private: <why>``): a paho upgrade is then checked in one place."""

from __future__ import annotations

import re

from tests.support.tools import REPO

# The private attributes of paho.mqtt.client.Client and aiomqtt.Client the gateway relies on.
_PRIVATE = re.compile(
    r"\.(_client|_sock|_in_packet|_send_publish|_send_pubrel|_handle_pubrec|_handle_pubackcomp"
    r"|_mid_generate|_disconnected|_queue)\b"
)
_LINK = "edge_gateway/qos2link.py"


def _accesses() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted((REPO / "edge_gateway").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _PRIVATE.search(code):
                found.append((rel, n, line))
    return found


def test_only_the_qos2_link_touches_paho_privates_each_marked() -> None:
    accesses = _accesses()
    outside = [f"{p}:{n}" for p, n, _ in accesses if p != _LINK]
    assert not outside, f"paho/aiomqtt private attributes used outside {_LINK}: {outside}"
    unmarked = [f"{p}:{n}" for p, n, line in accesses if "# paho-private: " not in line]
    assert not unmarked, f"mark each access with '# paho-private: <why>': {unmarked}"
    assert len(accesses) >= 10, "the QoS 2 link no longer hooks paho? update this test"
