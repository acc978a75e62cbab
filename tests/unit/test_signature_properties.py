"""Property tests: reading keys, cosign layers, bundles, statements and trusted roots is total
on hostile bytes — a reason or a ValueError, never another exception."""

from __future__ import annotations

import base64
import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy import attestations, signing, sigverify
from tests.support import cosign
from tests.support.sigstore import Sigstore

DIGEST = "sha256:" + "1" * 64
KEY = cosign.keypair()
TRUST = sigverify.Trust(
    sigverify.load_keys([signing.parse_public_key(KEY.public_pem).der]),
    sigverify.load_roots([signing.public_good_root()]),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
bundle_keys = st.sampled_from(
    [
        "mediaType",
        "verificationMaterial",
        "dsseEnvelope",
        "messageSignature",
        "certificate",
        "tlogEntries",
        "payload",
        "payloadType",
        "signatures",
        "messageDigest",
    ]
)
bundle_like = st.recursive(
    st.none() | st.integers() | st.text(max_size=40) | st.just(cosign.BUNDLE_V03),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(bundle_keys, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_public_key_reading_raises_only_value_error(der: bytes) -> None:
    text = (
        "-----BEGIN PUBLIC KEY-----\n"
        + base64.b64encode(der).decode()
        + "\n-----END PUBLIC KEY-----"
    )
    with contextlib.suppress(ValueError):  # any other exception fails the test
        key = signing.parse_public_key(text, "k")
        assert key.algorithm.startswith(("ecdsa-", "ed25519", "rsa-"))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=400),
    st.dictionaries(
        st.sampled_from(
            [
                sigverify.SIGNATURE_ANNOTATION,
                sigverify.CERTIFICATE_ANNOTATION,
                sigverify.REKOR_ANNOTATION,
            ]
        ),
        st.text(max_size=200),
        max_size=3,
    ),
)
def test_cosign_layers_give_facts_never_exceptions(
    payload: bytes, annotations: dict[str, str]
) -> None:
    found = sigverify.verify_cosign(payload, annotations, DIGEST, TRUST)
    assert found.verified is False
    assert found.reason


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(bundle_like)
def test_bundles_give_facts_never_exceptions(document: object) -> None:
    found = sigverify.verify_bundle(json.dumps(document).encode(), DIGEST, TRUST)
    assert found.verified is False
    assert found.reason


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_statements_and_envelopes_are_total(document: object) -> None:
    data = json.dumps(document).encode()
    attestations.read_statement(data, DIGEST)
    sigverify.open_envelope(data, TRUST)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_trusted_roots_load_or_raise_value_error(document: object) -> None:
    with contextlib.suppress(ValueError):  # any other exception fails the test
        root = sigverify.load_root(json.dumps(document).encode())
        assert root.certificates == () and not root.tlogs


_STORE = Sigstore()
_TRUST = sigverify.Trust((), sigverify.load_roots([_STORE.trusted_root()]))
_SIGNED = json.loads(_STORE.message_bundle(DIGEST))
_b64 = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
proof_like = st.fixed_dictionaries(
    {},
    optional={
        "logIndex": st.one_of(st.integers(-3, 40), st.text(max_size=8)),
        "treeSize": st.one_of(st.integers(-3, 40), st.text(max_size=8)),
        "rootHash": _b64 | st.text(max_size=8),
        "hashes": st.lists(_b64, max_size=8) | json_values,
        "checkpoint": st.fixed_dictionaries({"envelope": st.text(max_size=200)}) | json_values,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(proof_like)
def test_hostile_inclusion_proofs_are_refused_with_a_reason(proof: dict[str, object]) -> None:
    """Any index, size, path or checkpoint text: refused with a reason, never an exception
    (none of these can be the real proof, which the test log alone can make)."""
    bundle = json.loads(json.dumps(_SIGNED))
    bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"] = proof
    found = sigverify.verify_bundle(json.dumps(bundle).encode(), DIGEST, _TRUST)
    assert not found.verified and found.reason


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(bundle_like)
def test_attestation_envelopes_and_bundles_are_total(document: object) -> None:
    data = json.dumps(document).encode()
    assert isinstance(sigverify.open_cosign_attestation(data, {}, _TRUST), str | sigverify.Opened)
    opened = sigverify.open_attestation_bundle(data, _TRUST)
    assert opened is None or isinstance(opened, str | sigverify.Opened)
