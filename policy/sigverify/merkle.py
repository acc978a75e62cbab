"""Rekor inclusion proofs: the audit path from an entry's leaf to a tree root (RFC 9162
§2.1.3.2, as RFC 6962 trees are hashed), and the log's signed checkpoint of that root (a
signed note)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from policy.sigverify.base import Refused, b64, verifies_with


@dataclass(frozen=True)
class Proof:
    """A Rekor inclusion proof: the entry's index in a tree of `size` leaves, the audit path
    (`hashes`) to that tree's `root`, and the log's signed checkpoint of it (a signed note)."""

    index: int
    size: int
    root: bytes
    hashes: tuple[bytes, ...]
    checkpoint: str | None


MAX_PROOF_HASHES = 64  # a path in a tree of up to 2**64 leaves
MAX_CHECKPOINT_CHARS = 8 * 1024
MAX_NOTE_SIGNATURES = 16


def read_proof(value: object) -> Proof | None:
    """A bundle entry's `inclusionProof` (None when it has none); refused when malformed."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Refused("the inclusion proof is not an object")
    try:
        index, size = int(value.get("logIndex", "")), int(value.get("treeSize", ""))
    except (TypeError, ValueError):
        raise Refused("the inclusion proof has no log index or tree size") from None
    hashes = value.get("hashes", [])  # a tree of one leaf has none (and JSON omits them)
    if not isinstance(hashes, list):
        raise Refused("the inclusion proof's hashes are not a list")
    if len(hashes) > MAX_PROOF_HASHES:
        raise Refused(f"the inclusion proof has more than {MAX_PROOF_HASHES} hashes")
    path = tuple(b64(h, "an inclusion proof hash") for h in hashes)
    root = b64(value.get("rootHash"), "the inclusion proof's root hash")
    if len(root) != 32 or any(len(h) != 32 for h in path):
        raise Refused("the inclusion proof's hashes are not SHA-256 hashes")
    checkpoint = value.get("checkpoint")
    note = checkpoint.get("envelope") if isinstance(checkpoint, dict) else None
    if note is not None and (not isinstance(note, str) or len(note) > MAX_CHECKPOINT_CHARS):
        raise Refused("the inclusion proof's checkpoint is not a signed note")
    return Proof(index, size, root, path, note)


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root of a tree of `size` leaves reached from the leaf hash `leaf` at `index` by
    the audit path `path` (RFC 9162 §2.1.3.2, as RFC 6962 trees are hashed); ValueError when
    the path cannot be one of such a tree."""
    if not 0 <= index < size:
        raise ValueError("the log index is outside its tree")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ValueError("the audit path is longer than its tree is deep")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("the audit path is shorter than its tree is deep")
    return r


def verify_checkpoint(proof: Proof, key: PublicKeyTypes) -> None:
    """A checkpoint is a signed note: `origin\nsize\nbase64(root)\n[…]` then a blank line
    and `— <name> base64(key hint(4) ‖ signature)` lines; its size and root must be the
    proof's, and one signature the log key's over the note's text."""
    text, blank, signatures = (
        proof.checkpoint.partition("\n\n") if proof.checkpoint else ("", "", "")
    )
    lines = text.split("\n")
    if not blank or len(lines) < 3:
        raise Refused("its inclusion proof's checkpoint is not a signed note")
    try:
        size, root = int(lines[1]), base64.b64decode(lines[2], validate=True)
    except (ValueError, binascii.Error):
        raise Refused("its inclusion proof's checkpoint names no tree size and root") from None
    if (size, root) != (proof.size, proof.root):
        raise Refused(
            f"its inclusion proof's checkpoint is for another tree (size {size}, not "
            f"{proof.size}, or another root hash)"
        )
    signed = (text + "\n").encode()
    for line in signatures.split("\n")[:MAX_NOTE_SIGNATURES]:
        if not line.startswith("\u2014 "):
            continue
        try:
            raw = base64.b64decode(line.rpartition(" ")[2], validate=True)
        except (ValueError, binascii.Error):
            continue
        if len(raw) > 4 and verifies_with(key, signed, raw[4:]):
            return
    raise Refused("its inclusion proof's checkpoint is not signed by the log")
