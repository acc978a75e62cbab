"""Talking to OCI distribution registries (shell layer), in two layers.

Protocol (what is asked and what the answers mean):

- `client`: `RegistryClient` — manifests, blobs, referrers and configs, verified and bounded.
- `fetch`: one answer for a registry path — mirrors then upstream, credentials, retries,
  redirects, request events.
- `endpoints`: where a registry is reached (mirrors, upstream, plain http) and where its
  redirects may lead; `messages`: how registry failures are worded; `ratelimits`: rate-limit
  and `Retry-After` headers; `media`: media types, digests, manifest/config parsing and
  platform selection (pure).
- `auth`: the `Authenticator` answering 401 challenges; `challenges` (`WWW-Authenticate`
  parsing), `realms` (which token realms may be contacted) and `tokens` (token requests and
  answers) are its pure parts; `credentials`: finding credentials.

Transport (how bytes travel, one place for sockets, deadlines, body caps and egress):

- `exchange`: the one entry point — one bounded request, its body capped, or a classified
  failure.
- `transport`: the guarded adapter — egress checked on the address actually connected, a
  watchdog ending each exchange at its deadline; `session`: the `requests` session using it.

Import the modules (`from policy.registry import client`); nothing is re-exported here.
"""
