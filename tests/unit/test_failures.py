"""policy.failures: every registry error is told to a pod author by its class alone — fixed
words and at most an HTTP status — whatever its message says."""

from __future__ import annotations

import re

import pytest

from policy import errors, failures
from policy.failures import Cause

# What a hostile upstream (or a failure to reach an internal address) puts in a message.
HOSTILE = (
    "ghcr.io/x/y:1: 10.0.0.7:5432 answered HTTP 500: X: internal-admin v3.2; "
    "db=postgres://admin:hunter2@10.0.0.7/prod; cannot reach 169.254.169.254:80: "
    "[Errno 111] connection refused; token realm https://vault.internal/token; manifest unknown"
)
LEAKS = ("10.0.0.7", "5432", "internal-admin", "postgres", "hunter2", "169.254", "Errno", "vault")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (errors.RegistryUnavailable(HOSTILE), "registry unreachable"),
        (errors.RegistryUnavailable(HOSTILE, status=500), "registry answered an error (HTTP 500)"),
        (errors.RegistryUnavailable(HOSTILE, status=503), "registry answered an error (HTTP 503)"),
        (errors.RegistryError(HOSTILE, status=418), "registry answered an error (HTTP 418)"),
        (errors.RegistryError(HOSTILE, status=302), "registry answered an error (HTTP 302)"),
        (errors.RegistryError(HOSTILE), "registry answered something invalid"),
        (errors.ManifestNotFound(HOSTILE), "image not found"),
        (errors.ManifestNotFound(HOSTILE, status=404), "image not found"),
        (errors.RegistryAuthError(HOSTILE), "registry authentication failed"),
        (errors.RegistryAuthError(HOSTILE, status=403), "registry authentication failed"),
        (errors.RateLimited(HOSTILE), "rate limited by the registry"),
        (errors.RateLimited(HOSTILE, status=429), "rate limited by the registry"),
        (errors.IntegrityError(HOSTILE), "registry answered something invalid"),
        (errors.UnsupportedManifest(HOSTILE), "unsupported manifest format"),
        (errors.EgressRefused(HOSTILE), "refused by egress policy"),
        (errors.NoSource(HOSTILE), "no source configured for it"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, errors.RegistryError) else "",
)
def test_each_error_is_told_by_its_class(error: errors.RegistryError, expected: str) -> None:
    told = failures.classify(error)
    assert told == expected
    assert not [leak for leak in LEAKS if leak in told]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, "registry answered an error (HTTP 500)"),
        (599, "registry answered an error (HTTP 599)"),
        (100, "registry answered an error (HTTP 100)"),
        # Not an HTTP status: never shown, and a failure without an answer is unreachable.
        (99, "registry unreachable"),
        (600, "registry unreachable"),
        (-1, "registry unreachable"),
        (True, "registry unreachable"),
        (None, "registry unreachable"),
    ],
)
def test_only_a_real_http_status_is_shown(status: int | None, expected: str) -> None:
    assert failures.classify(errors.RegistryUnavailable("x", status=status)) == expected


def test_every_cause_is_reachable_from_some_error_and_words_are_fixed() -> None:
    """The table covers the whole set, and no cause's words carry anything but the party and
    the status (no field a message could fill)."""
    reached = {
        failures.cause(kind("x", status=status))
        for kind in (
            errors.RegistryError,
            errors.RegistryUnavailable,
            errors.RegistryAuthError,
            errors.RateLimited,
            errors.ManifestNotFound,
            errors.UnsupportedManifest,
            errors.IntegrityError,
            errors.EgressRefused,
            errors.NoSource,
        )
        for status in (None, 500)
    }
    # NOT_RECORDED is the facts file's, which has no registry error to classify.
    assert reached == set(Cause) - {Cause.NOT_RECORDED}
    for cause in Cause:
        assert set(re.findall(r"{(\w+)}", cause.value)) <= {"party", "status"}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (errors.RegistryUnavailable(HOSTILE), "Docker Hub unreachable"),
        (
            errors.RegistryUnavailable(HOSTILE, status=502),
            "Docker Hub answered an error (HTTP 502)",
        ),
        (errors.RateLimited(HOSTILE), "rate limited by Docker Hub"),
        (errors.RegistryError(HOSTILE), "Docker Hub answered something invalid"),
        (errors.NoSource(HOSTILE), "no source configured for it"),
    ],
)
def test_the_tier_names_docker_hub(error: errors.RegistryError, expected: str) -> None:
    assert failures.classify(error, party=failures.DOCKER_HUB) == expected


def test_a_subclass_of_a_listed_class_is_classified_as_its_parent() -> None:
    class Refused(errors.EgressRefused):
        pass

    class Gone(errors.ManifestNotFound):
        pass

    assert failures.classify(Refused("10.0.0.7", status=500)) == "refused by egress policy"
    assert failures.classify(Gone("x", status=410)) == "image not found"
