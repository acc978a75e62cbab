"""The tier of any image from one place: the operator's catalog, the offline rule, then Docker
Hub (`Tiers`), and the tier source a settings file describes (`from_settings`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

import requests

from policy.deadline import Deadline
from policy.diskcache import DiskCache
from policy.egress import Mode
from policy.errors import NoSource
from policy.facts import TIERS, offline_tier
from policy.patterns import ImagePattern
from policy.reference import Reference
from policy.registry.session import egress_policy, new_session
from policy.registry.transport import Transport
from policy.settings import Settings
from policy.sharedcache import SharedCache
from policy.tiers.hub import HUB, HubTiers

SOURCE_CATALOG: Final = "catalog"
SOURCE_OFFLINE: Final = "offline rule"

Catalog = Sequence[tuple[str, ImagePattern]]


def catalog_tier(catalog: Catalog, ref: Reference) -> str | None:
    """The tier of the first catalog entry (in file order) whose pattern matches `ref`."""
    for tier, pattern in catalog:
        if pattern.matches(ref):
            return tier
    return None


def known_tier(catalog: Catalog, ref: Reference) -> tuple[str, str] | None:
    """`(tier, source)` from the catalog or the offline rule, without any I/O; None when only
    Docker Hub can tell."""
    tier = catalog_tier(catalog, ref)
    if tier is not None:
        return tier, SOURCE_CATALOG
    tier = offline_tier(ref.registry, ref.repository)
    if tier is not None:
        return tier, SOURCE_OFFLINE
    return None


class Tiers:
    """The tier of any image: catalog → offline rule → Docker Hub (see the module docstring).

    `hub` None means no lookup is possible (air-gapped without a proxy): images that only
    Docker Hub could place get an error, and `onResolveError` decides.
    """

    def __init__(self, catalog: Catalog = (), hub: HubTiers | None = None) -> None:
        for tier, _ in catalog:
            if tier not in TIERS:
                raise ValueError(f"unknown tier {tier!r} in the catalog")
        self.catalog = tuple(catalog)
        self.hub = hub

    def known(self, ref: Reference) -> tuple[str, str] | None:
        """`(tier, source)` without I/O (catalog, offline rule), or None."""
        return known_tier(self.catalog, ref)

    def tier(self, ref: Reference, *, deadline: Deadline) -> tuple[str, str]:
        """`(tier, source)`; RegistryError when the tier is unknown."""
        known = self.known(ref)
        if known is not None:
            return known
        if self.hub is None:
            raise NoSource(
                f"trusted-content tier of {ref} is unknown: no Docker Hub tier lookup is "
                "configured (add it to the `tiers` catalog)",
                registry=HUB,
                reference=str(ref),
            )
        return self.hub.tier(ref, deadline=deadline)


def from_settings(
    settings: Settings,
    *,
    session: requests.Session | None = None,
    clock: Callable[[], float] = time.monotonic,
    disk: DiskCache | None = None,
    mode: Mode = "webhook",
    shared: SharedCache | None = None,
) -> Tiers:
    """The tier source a settings file describes: its catalog, then Docker Hub at
    `dockerHub.api` with answers cached for `dockerHub.tierTTL` (a new `RegistrySession`, with
    the settings' egress policy in `mode`, if none)."""
    if session is None:
        session = new_session(Transport(egress_policy(settings, mode)))
    hub = HubTiers(
        session,
        api=settings.docker_hub_api,
        ttl=settings.tier_ttl,
        request_timeout=settings.request_timeout,
        max_bytes=max(16, settings.cache_max_bytes // 32),
        max_in_flight=settings.hub_in_flight,
        clock=clock,
        disk=disk,
        shared=shared,
    )
    return Tiers(settings.tier_catalog, hub)
