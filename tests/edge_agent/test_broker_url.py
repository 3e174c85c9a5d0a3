"""Broker URLs are parsed once (edge_agent.broker_url) for the agent, the deployer and the simulator."""

from __future__ import annotations

import doctest

import pytest

from edge_agent import broker_url
from edge_agent.broker_url import BrokerAddress, parse_broker_url


def test_defaults_and_schemes() -> None:
    assert parse_broker_url("mqtt://h") == BrokerAddress("h", 1883, False)
    assert parse_broker_url("mqtts://h") == BrokerAddress("h", 8883, True)
    assert parse_broker_url("h:1999") == BrokerAddress("h", 1999, False)
    assert parse_broker_url("mqtts://h:8884/").url == "mqtts://h:8884"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://h", "scheme"),
        ("mqtt://u:pw@h", "GRUWATCH_MQTT_USERNAME"),
        ("mqtt://h:99999", "port"),
        ("mqtt://", "no host"),
        ("mqtt://h/topic", "only scheme, host and port"),
        ("mqtt://h?x=1", "only scheme, host and port"),
    ],
)
def test_bad_urls_say_what_to_write(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_broker_url(url)


def test_docstring_examples() -> None:
    result = doctest.testmod(broker_url)
    assert result.attempted >= 2
    assert result.failed == 0
