"""The Merkle tree of RFC 6962 (certificate transparency, Rekor): the tree hash over leaf
hashes and a leaf's audit path, written from the RFC's recursive definitions, independently of
the verifier's iterative ones, so the tests can make inclusion proofs."""

from __future__ import annotations

import hashlib


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than `n` (RFC 6962 §2.1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_tree_hash(leaves: list[bytes]) -> bytes:
    """MTH of RFC 6962 §2.1 over leaf hashes (written from the RFC's recursive definition,
    independently of the verifier's iterative one)."""
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(merkle_tree_hash(leaves[:k]), merkle_tree_hash(leaves[k:]))


def audit_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 §2.1.1: the audit path of leaf `m`."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return [*audit_path(m, leaves[:k]), merkle_tree_hash(leaves[k:])]
    return [*audit_path(m - k, leaves[k:]), merkle_tree_hash(leaves[:k])]
