"""The checks a rule can `require`: each is one parse function, one judge function, the fact it
reads, its JSON-Schema entry and its docs row (pure).

Adding a check means adding one `CheckSpec` to the `SPECS` of the module for what it reads,
plus its tests: `image` (the reference, the tier, platforms, manifests, configs),
`signatures` or `attestations`; `signers` reads the keys and keyless identities those two
trust, and `spec` says what a check is. `CHECKS` below is every check, in the order of the
schema and the docs.
"""

from __future__ import annotations

from policy.checks import attestations, image, signatures
from policy.checks.spec import CheckSpec, Fact, Subject

__all__ = ["CHECKS", "CheckSpec", "Fact", "Subject"]

CHECKS: dict[str, CheckSpec] = {
    spec.name: spec for spec in (*image.SPECS, *signatures.SPECS, *attestations.SPECS)
}
