"""Rekor inclusion proofs: the RFC 6962 audit path from an entry's leaf hash to the root, and
the signed checkpoint of that root by the log key of the trusted root — checked on a real
public-good bundle (a tree of 75 million entries) and on the test log's trees of several
entries; each wrong proof or checkpoint refused with its reason."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from policy import signing, sigverify
from tests.support import attest, cosign
from tests.support.sigstore import GITHUB, WORKFLOW, Sigstore, audit_path, merkle_tree_hash

REAL = Path(__file__).parents[1] / "data" / "signatures" / "rfc8785-wheel" / "bundle.sigstore"
WHEEL = "sha256:c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201"
PUBLIC_GOOD = sigverify.Trust((), sigverify.load_roots([signing.public_good_root()]))
STORE = Sigstore()
TRUST = sigverify.Trust((), sigverify.load_roots([STORE.trusted_root()]))
DIGEST = "sha256:" + "1" * 64


def _proof(bundle: dict[str, Any]) -> dict[str, Any]:
    proof: dict[str, Any] = bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    return proof


def _changed(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    bundle = json.loads(data)
    change(_proof(bundle))
    return json.dumps(bundle).encode()


def test_a_real_public_good_inclusion_proof_and_checkpoint_verify() -> None:
    data = REAL.read_bytes()
    proof = _proof(json.loads(data))
    assert (proof["treeSize"], len(proof["hashes"])) == ("75441653", 16)
    found = sigverify.verify_bundle(data, WHEEL, PUBLIC_GOOD)
    assert found.verified, found.reason
    assert found.subject == (
        "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
    )


def _swap(proof: dict[str, Any]) -> None:
    proof["hashes"][3], proof["hashes"][4] = proof["hashes"][4], proof["hashes"][3]


def _other_root(proof: dict[str, Any]) -> None:
    proof["rootHash"] = base64.b64encode(b"\x07" * 32).decode()


def _resigned_elsewhere(proof: dict[str, Any]) -> None:
    text, _, signatures = proof["checkpoint"]["envelope"].partition("\n\n")
    name, _, encoded = signatures.rstrip("\n").rpartition(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[-5] ^= 1  # one bit of the signature
    proof["checkpoint"]["envelope"] = f"{text}\n\n{name} {base64.b64encode(raw).decode()}\n"


def _checkpoint_of_a_bigger_tree(proof: dict[str, Any]) -> None:
    note = proof["checkpoint"]["envelope"]
    proof["checkpoint"]["envelope"] = note.replace("\n75441653\n", "\n75441654\n")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_swap, "its inclusion proof does not lead from the entry to its root hash"),
        (_other_root, "its inclusion proof does not lead from the entry to its root hash"),
        (
            lambda p: p["hashes"].pop(),
            "its inclusion proof is wrong: the audit path is shorter than its tree is deep",
        ),
        (
            lambda p: p["hashes"].extend(p["hashes"][:2]),
            "its inclusion proof is wrong: the audit path is longer than its tree is deep",
        ),
        (
            lambda p: p.update(logIndex="75441653"),
            "its inclusion proof is wrong: the log index is outside its tree",
        ),
        (_resigned_elsewhere, "its inclusion proof's checkpoint is not signed by the log"),
        (
            _checkpoint_of_a_bigger_tree,
            "its inclusion proof's checkpoint is for another tree (size 75441654, not 75441653, "
            "or another root hash)",
        ),
        (
            lambda p: p["checkpoint"].update(envelope="rekor.sigstore.dev\n"),
            "its inclusion proof's checkpoint is not a signed note",
        ),
    ],
)
def test_a_wrong_real_proof_or_checkpoint_is_refused_with_its_reason(
    change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    found = sigverify.verify_bundle(_changed(REAL.read_bytes(), change), WHEEL, PUBLIC_GOOD)
    assert not found.verified
    assert found.reason == reason


@pytest.mark.parametrize("size", range(1, 18))
def test_every_leaf_of_every_small_tree_reaches_its_root(size: int) -> None:
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(size)]
    root = merkle_tree_hash(leaves)
    for m in range(size):
        path = audit_path(m, leaves)
        assert sigverify.merkle_root(m, size, leaves[m], path) == root
        if size > 1:  # another leaf, or the path of another leaf, reaches another root
            other = (m + 1) % size
            assert sigverify.merkle_root(m, size, leaves[other], path) != root
            assert _reached(m, size, leaves[m], audit_path(other, leaves)) != root


def _reached(m: int, size: int, leaf: bytes, path: list[bytes]) -> bytes | None:
    try:
        return sigverify.merkle_root(m, size, leaf, path)
    except ValueError:
        return None


def test_test_log_bundles_carry_proofs_through_trees_of_several_entries() -> None:
    store = Sigstore(seed_entries=6)
    trust = sigverify.Trust((), sigverify.load_roots([store.trusted_root()]))
    made = [
        make()
        for _ in range(2)
        for make in (
            lambda: store.message_bundle(DIGEST),
            lambda: store.dsse_bundle(cosign.statement(DIGEST)),
        )
    ]
    for n, bundle in enumerate(made):
        proof = _proof(json.loads(bundle))
        assert (int(proof["logIndex"]), int(proof["treeSize"])) == (6 + n, 7 + n)
        assert proof["hashes"]  # a path through a tree of several entries
        found = sigverify.verify_bundle(bundle, DIGEST, trust)
        assert found.verified, found.reason
        assert (found.issuer, found.subject) == (GITHUB, WORKFLOW)


def _stranger_checkpoint(proof: dict[str, Any]) -> None:
    root = base64.b64decode(proof["rootHash"])
    stranger = ec.generate_private_key(ec.SECP256R1())
    proof["checkpoint"]["envelope"] = STORE.checkpoint(int(proof["treeSize"]), root, key=stranger)


def _checkpoint_of_another_root(proof: dict[str, Any]) -> None:
    proof["checkpoint"]["envelope"] = STORE.checkpoint(int(proof["treeSize"]), b"\x05" * 32)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda p: p["hashes"].__setitem__(0, base64.b64encode(b"\x00" * 32).decode()),
            "its inclusion proof does not lead from the entry to its root hash",
        ),
        (_stranger_checkpoint, "its inclusion proof's checkpoint is not signed by the log"),
        (
            _checkpoint_of_another_root,
            "its inclusion proof's checkpoint is for another tree",
        ),
    ],
)
def test_wrong_test_log_proofs_deny_keyless_signatures_and_attestations(
    change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    signed = sigverify.verify_bundle(_changed(STORE.message_bundle(DIGEST), change), DIGEST, TRUST)
    assert not signed.verified
    assert signed.reason.startswith(reason)
    _, statement = attest.provenance_v02(DIGEST)
    opened = sigverify.open_attestation_bundle(
        _changed(STORE.dsse_bundle(statement), change), TRUST
    )
    assert isinstance(opened, sigverify.Opened) and opened.subject is None
    assert opened.reason.startswith(f"keyless {WORKFLOW} (issuer {GITHUB}): {reason}")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda p: p.update(hashes=["AA=="] * 65), "the inclusion proof has more than 64 hashes"),
        (lambda p: p.update(hashes=["AA=="]), "the inclusion proof's hashes are not SHA-256"),
        (lambda p: p.update(treeSize="many"), "the inclusion proof has no log index or tree"),
        (
            lambda p: p["checkpoint"].update(envelope="x" * 9000),
            "the inclusion proof's checkpoint is not a signed note",
        ),
    ],
)
def test_hostile_proofs_are_refused_before_any_hashing(
    change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    found = sigverify.verify_bundle(_changed(STORE.message_bundle(DIGEST), change), DIGEST, TRUST)
    assert not found.verified
    assert found.reason.startswith(reason)
