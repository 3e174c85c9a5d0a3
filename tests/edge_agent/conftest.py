"""Fixtures of the agent's tests: signed hand-made bundles, MQTT peers, the agent as a child process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from edge_agent.signing import generate_keypair
from tests.conftest import Broker
from tests.edge_agent.agent_testing import (
    AgentProcess,
    Models,
    Subscriber,
    close_client,
    make_bundle,
    mqtt_client,
    write_agent_config,
)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("agent-models")
    key, pub = generate_keypair(root / "keys")
    return Models(key, pub, make_bundle(root / "v1", key, version="rms-v1"))


@pytest.fixture
def subscriber(broker: Broker, topic_prefix: str) -> Iterator[Subscriber]:
    s = Subscriber(broker, topic_prefix)
    yield s
    s.close()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[paho.Client]:
    c = mqtt_client(broker)
    yield c
    close_client(c)


@pytest.fixture
def agent_process(
    broker: Broker, topic_prefix: str, models: Models, tmp_path: Path
) -> Iterator[Callable[..., AgentProcess]]:
    """`agent_process(name, **settings)`: an agent's config written under tmp_path, ready to `start()`.

    Every process started through it is killed at teardown if still running.
    """
    made: list[AgentProcess] = []

    def make(name: str = "agent", **settings: Any) -> AgentProcess:
        agent_id = f"{name}-{topic_prefix[-12:]}"
        store = tmp_path / f"{name}.db"
        config = tmp_path / f"{name}.toml"
        write_agent_config(
            config,
            broker=broker,
            prefix=topic_prefix,
            agent_id=agent_id,
            models=models,
            store=store,
            **settings,
        )
        made.append(AgentProcess(config, store, agent_id))
        return made[-1]

    yield make
    for a in made:
        a.kill_all()
