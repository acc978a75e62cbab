"""Docker Hub tier answers through the shared tier: a replica asks the Hub API what another
replica already learned from it nothing, for the tier TTL (real redis-server, the test Hub)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from policy import reference, tiers
from policy.deadline import Deadline
from policy.sharedcache import SharedCache, connect
from tests.support.hubserver import HubServer
from tests.support.redisserver import RunningRedis


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer()
    try:
        yield server
    finally:
        server.close()


def test_a_tier_learned_by_one_replica_is_read_by_the_next(
    hub: HubServer, redis_server: RunningRedis
) -> None:
    hub.badges["acme/app"] = "verified_publisher"
    answers = []
    for _ in range(2):
        shared = SharedCache(connect(redis_server.url, command_timeout=1))
        with requests.Session() as session:
            replica = tiers.HubTiers(session, api=hub.url, ttl=3600, shared=shared)
            answers.append(replica.tier(reference.parse("acme/app:1.0"), deadline=Deadline(5)))
        shared.close()
    assert answers == [("verified_publisher", "Docker Hub search")] * 2
    assert hub.searches == 1
    with redis_server.client() as client:
        assert 3590_000 < client.pttl("image-policy:tier:acme") <= 3600_000
