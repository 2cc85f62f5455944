"""Shared fixtures: real Mosquitto brokers on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from host_tools.sim.brokers import MosquittoBroker, mosquitto_path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--port", default=None, help="serial port of a real board for hil tests")
    parser.addoption(
        "--run-soak",
        action="store_true",
        default=False,
        help="also run the soak tests (long runs: minutes of traffic; not part of CI's suite)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_hil = pytest.mark.skip(reason="needs a real board: give --port /dev/ttyUSB0")
    skip_soak = pytest.mark.skip(reason="soak test: run with --run-soak (takes minutes)")
    for item in items:
        if "hil" in item.keywords and not config.getoption("--port"):
            item.add_marker(skip_hil)
        if "soak" in item.keywords and not config.getoption("--run-soak"):
            item.add_marker(skip_soak)


@pytest.fixture
def broker_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., MosquittoBroker]]:
    """Start real Mosquitto brokers; all are stopped at the end of the test."""
    if mosquitto_path() is None:
        pytest.fail("Mosquitto is not installed: run the README's test command, which installs it")
    started: list[MosquittoBroker] = []

    def make(name: str = "broker", **kwargs: object) -> MosquittoBroker:
        workdir = tmp_path_factory.mktemp(name)
        broker = MosquittoBroker(name=name, workdir=workdir, **kwargs)  # type: ignore[arg-type]
        started.append(broker)
        return broker.start()

    yield make
    for b in started:
        b.stop(kill=True)


@pytest.fixture
def local_broker(broker_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    return broker_factory("local")


@pytest.fixture
def upstream_broker(broker_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    return broker_factory("upstream")
