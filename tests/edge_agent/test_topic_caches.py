"""The per-sensor topic caches stay bounded (memory per tracked sensor) and stay correct past their bound."""

from __future__ import annotations

from edge_agent.messages import HealthEncoder, SensorTopics
from edge_agent.protocol import alert_topic, health_topic


def test_sensor_topics_are_bounded_and_correct_beyond_the_bound() -> None:
    cap = SensorTopics._CACHE_MAX
    topics = SensorTopics("plant/a", 100_000)
    assert topics.max_sensors == cap  # tracking 100,000 sensors does not cache 100,000 topic triples
    for i in range(cap + 500):
        machine, sensor = f"m{i // 4}", f"s{i % 4}"
        got = topics.of(f"{machine}/{sensor}", machine, sensor)
        assert len(topics._cache) <= cap
        if i % 997 == 0 or i >= cap:
            assert got == (
                health_topic("plant/a", machine, sensor),
                alert_topic("plant/a", machine, sensor),
                HealthEncoder.head(machine, sensor),
            )
    assert SensorTopics("p", 10).max_sensors == 10  # a smaller agent keeps its own bound
