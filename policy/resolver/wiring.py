"""`build`: a `RegistryResolver` wired from the settings file — credentials, token realms,
mirrors, CAs, the egress policy of the session's transport, the shared tier and the tier
source."""

from __future__ import annotations

from collections.abc import Callable

import requests

from policy import sharedcache
from policy import tiers as tiers_mod
from policy.diskcache import DiskCache
from policy.egress import Mode
from policy.registry.auth import Authenticator
from policy.registry.client import RegistryClient, RegistryConfig, RequestEvent
from policy.registry.credentials import Credential, CredentialStore, default_docker_config
from policy.registry.session import RegistrySession, egress_policy, new_session
from policy.registry.transport import Transport
from policy.resolver.core import RegistryResolver, TierSource
from policy.settings import Settings


def build(
    settings: Settings,
    *,
    mode: Mode = "webhook",
    session: requests.Session | None = None,
    on_request: Callable[[RequestEvent], None] | None = None,
    tiers: TierSource | None = None,
    disk: DiskCache | None = None,
    max_workers: int = 32,
) -> RegistryResolver:
    """A resolver wired from the settings file: credentials, auth, mirrors, CAs, caches, and
    the tier source (catalog, offline rule, Docker Hub) sharing the same session, whose
    transport connects only where the settings' egress policy allows in `mode`."""
    policy = egress_policy(settings, mode)
    if session is None:
        session = new_session(Transport(policy))
    elif isinstance(session, RegistrySession) and session.transport is not None:
        session.transport.policy = policy
    explicit = {
        name: Credential(username=r.auth.username, password=r.auth.password)
        for name, r in settings.registries.items()
        if r.auth is not None
    }
    docker_config = settings.docker_config or default_docker_config()
    store = CredentialStore.from_sources(docker_config, settings.pull_secrets, explicit)
    # Each registry trusts only its own configured token realms.
    trusted = {name: r.token_realms for name, r in settings.registries.items() if r.token_realms}
    authenticator = Authenticator(session, store, trusted_realms=trusted)
    configs = {
        name: RegistryConfig(mirrors=r.mirrors, ca=r.ca, insecure=r.insecure)
        for name, r in settings.registries.items()
    }
    client = RegistryClient(
        session,
        authenticator=authenticator,
        registries=configs,
        request_timeout=settings.request_timeout,
        on_request=on_request,
    )
    shared = sharedcache.from_settings(settings.shared_cache) if settings.shared_cache else None
    if tiers is None:
        tiers = tiers_mod.from_settings(
            settings, session=session, disk=disk, mode=mode, shared=shared
        )
    return RegistryResolver(
        client,
        tiers=tiers,
        tag_ttl=settings.tag_ttl,
        cache_max_bytes=settings.cache_max_bytes,
        disk=disk,
        max_workers=max_workers,
        per_registry=settings.per_registry,
        break_after=settings.break_after,
        break_for=settings.break_for,
        patience=settings.patience,
        request_timeout=settings.request_timeout,
        shared=shared,
    )
