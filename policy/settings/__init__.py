"""The settings file (`--config FILE` or `IMAGE_POLICY_CONFIG`): registries, credentials,
caches and timeouts, validated with the same file:line:column errors as rule files.

```yaml
registries:
  docker.io:
    mirrors: ["https://mirror.example.com"]
  registry.corp.example:
    ca: /etc/image-policy/corp-ca.pem
    insecure: false
    tokenRealms: ["https://auth.corp.example/token"]   # token realms trusted explicitly
    auth: {username: robot, passwordFile: /var/run/secrets/corp/password}
dockerConfig: /var/run/secrets/pull/.dockerconfigjson
pullSecrets: [/var/run/secrets/other/.dockerconfigjson]
dockerHub: {api: "https://hub.docker.com", tierTTL: 24h}
tiers:                          # operator catalog: first matching entry wins, in file order
  verified_publisher: ["docker.io/acme/**"]
  official: ["registry.k8s.io/**"]
cache:
  tagTTL: 5m
  maxBytes: 256MiB
  memoBytes: 32MiB
  shared:                    # a second tier shared by every replica (policy/sharedcache.py)
    url: rediss://redis.image-policy.svc:6379/0     # redis:// or rediss:// (TLS)
    username: image-policy   # ACL user (optional)
    passwordFile: /var/run/secrets/redis/password   # or passwordEnv: REDIS_PASSWORD
    ca: /etc/image-policy/redis-ca.pem              # rediss:// only; else the system CAs
    keyPrefix: "image-policy:"
    timeouts: {connect: 50ms, command: 25ms}        # per Redis call; then a miss
    lease: 3s                # one replica fetches, the others wait for its answer this long
    contentTTL: 7d           # manifests and configs (tags: as long as the resolver remembers)
    maxEntryBytes: 4MiB      # larger entries are neither written nor read
    maxConnections: 64       # per worker process
    breakAfter: 3            # consecutive Redis failures that skip Redis ...
    breakFor: 5s             # ... for this long, then one call probes it
timeouts: {request: 5s, decision: 8s}
bulkheads:                   # what one slow or dead registry may hold
  perRegistry: 16            # lookups in flight per registry (its index children: as many again)
  dockerHub: 4               # Docker Hub API requests in flight
  breakAfter: 5              # consecutive timeouts that short-circuit a registry ...
  breakFor: 5s               # ... for this long, then one request probes it
  patience: 2.5s             # a registry whose oldest lookup has run this long is slow:
                             # lookups queued for it give up at once
review: {maxImages: 1000}    # image sites per review; more: denied at once
excludeNamespaces: [kube-system, image-policy]   # allowed without lookups (webhook)
recheckUnchanged: false      # on UPDATE, re-check images identical to oldObject's
mutate: {pin: true}          # /mutate pins allowed tag references to their digest
breakGlass: false            # ImageReview: break-glass.image-policy.k8s.io/* allows and audits
egress:                      # where the resolver may connect (policy/egress.py); configured
  allow: ["10.20.0.0/16", "*.corp.example"]   # registries, mirrors and realms always may
  deny: ["10.20.99.0/24"]                     # refused whatever else says
workloads:                   # custom kinds' image paths (over the built-in table)
  example.com/Runner:        # group/Kind (Kind alone for the core group)
    podSpecs: ["spec.pod"]
    images: ["spec.steps[*].image"]
```
When `excludeNamespaces` is not set, it is `kube-system` plus the webhook's own namespace
(`$POD_NAMESPACE`, else `image-policy`).

The file may hold secrets (`auth.password`), and its errors reach the unauthenticated
`/readyz`, the log and the CLI's stderr, so they never repeat what the file holds: each names
the location, the key's path, what was expected and the *type* found ("expected a non-empty
string, got an integer"), never a value, an unknown key's text or a file's contents.

The package: `model` (the frozen `Settings` and its parts), `parse` (`parse_settings`: the
top-level keys and the small sections; `load_settings`), `registries` (`registries:`), `shared`
(`cache.shared`) and `fields` (URLs, durations, sizes and files, read alike in every section).
"""

from __future__ import annotations

from policy.settings.model import (
    DEFAULT_OWN_NAMESPACE,
    RegistryAuth,
    RegistrySettings,
    Settings,
    SharedCacheSettings,
)
from policy.settings.parse import ENV_VAR, load_settings, parse_settings

__all__ = [
    "DEFAULT_OWN_NAMESPACE",
    "ENV_VAR",
    "RegistryAuth",
    "RegistrySettings",
    "Settings",
    "SharedCacheSettings",
    "load_settings",
    "parse_settings",
]
