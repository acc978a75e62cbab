"""Talking to OCI distribution registries (shell layer).

- `media`: media types, digests, manifest/config parsing and platform selection (pure).
- `client`: `RegistryClient`, the verified, bounded HTTP client.
- `auth` / `credentials`: answering 401 challenges and finding credentials.

Import the modules (`from policy.registry import client`); nothing is re-exported here.
"""
