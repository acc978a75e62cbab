"""One canonical identity, end to end: no spelling of a host and no decorative tag dodges a
rule, and `/mutate` pins what it judges — through `check`, `/validate`, `/mutate` and
`/imagereview`, with the shipped `rules/default.yaml`, the real distribution registry acting as
the Docker Hub mirror, and a loopback stand-in for the Docker Hub API."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from policy import cli
from tests.e2e.conftest import CA, ROOT, Webhook, start_webhook
from tests.support import images
from tests.support.hubserver import HubServer
from tests.support.registry import RunningRegistry, start_registry

pytestmark = pytest.mark.registry

AMD64 = "linux/amd64"
ARM64 = "linux/arm64"
LEGACY = """\
apiVersion: image-policy/v1
kind: RuleSet
exceptions:
  - rules: [non-root]
    images: ["mycorp/app:legacy-*"]
    reason: legacy builds run as root until they are retired
    expires: 2099-12-31
"""


@dataclass(frozen=True)
class Hub:
    """The Docker Hub mirror's images, and the settings that make it Docker Hub."""

    nginx: str  # digest of library/nginx:1.25 (official, non-root)
    miner: str  # digest of evilcorp/miner:1.0 (no trusted-content tier)
    app: str  # digest of mycorp/app:1.0 (verified publisher, non-root)
    debug: str  # digest of mycorp/app:1.0-debug (same publisher, runs as root)
    legacy: str  # digest of mycorp/app:legacy-1 (same publisher, runs as root; excepted)
    multi: images.PushedIndex  # mycorp/multi:1.0, an index of linux/amd64 and linux/arm64
    arm: str  # its linux/arm64 entry
    settings: str


def _push(url: str, repo: str, tag: str, *, user: str) -> str:
    return images.push_image(
        url,
        repo,
        tag,
        layers=[images.blob_bytes(f"{repo}:{tag}", 200)],
        config=images.image_config(AMD64, user=user),
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    mirror: RunningRegistry = start_registry(tmp_path_factory.mktemp("hub-mirror"))
    api = HubServer()
    api.badges["mycorp/app"] = "verified_publisher"
    try:
        url = mirror.url
        amd = _push(url, "mycorp/multi", "amd64", user="1000")
        arm = images.push_image(
            url,
            "mycorp/multi",
            "arm64",
            layers=[images.blob_bytes("multi-arm", 200)],
            config=images.image_config(ARM64, user="1000"),
        )
        yield Hub(
            nginx=_push(url, "library/nginx", "1.25", user="101"),
            miner=_push(url, "evilcorp/miner", "1.0", user="1000"),
            app=_push(url, "mycorp/app", "1.0", user="1000"),
            debug=_push(url, "mycorp/app", "1.0-debug", user="0"),
            legacy=_push(url, "mycorp/app", "legacy-1", user="0"),
            multi=images.push_index(url, "mycorp/multi", "1.0", [(amd, AMD64), (arm, ARM64)]),
            arm=arm,
            settings=(
                f'registries:\n  docker.io:\n    mirrors: ["{url}"]\n'
                f'dockerHub: {{api: "{api.url}"}}\nmutate: {{pin: true}}\n'
            ),
        )
    finally:
        api.close()
        mirror.stop()


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory, ca: CA, hub: Hub) -> Iterator[Webhook]:
    """The webhook with the shipped default rules (unchanged) and one legacy exception."""
    directory = tmp_path_factory.mktemp("identity")
    (directory / "rules").mkdir()
    (directory / "rules" / "legacy.yaml").write_text(LEGACY)
    default = (ROOT / "rules" / "default.yaml").read_text()
    webhook = start_webhook(directory, ca, default, settings=hub.settings)
    try:
        yield webhook
    finally:
        webhook.stop()


# --- the four doors ----------------------------------------------------------------------------


def _review(obj: dict[str, Any], kind: str, group: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "identity-1",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
            "namespace": "dev",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": obj,
        },
    }


def _pod(*images_: str) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": im} for i, im in enumerate(images_)]
    return {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}}


def _deployment(*images_: str) -> dict[str, Any]:
    pod = _pod(*images_)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"template": {"metadata": {}, "spec": pod["spec"]}},
    }


def validate(hook: Webhook, image: str) -> bool:
    response = hook.post("/validate", _review(_pod(image), "Pod"))["response"]
    return bool(response["allowed"])


def mutate(hook: Webhook, obj: dict[str, Any], kind: str, group: str = "") -> dict[str, Any]:
    response: dict[str, Any] = hook.post("/mutate", _review(obj, kind, group))["response"]
    return response


def imagereview(hook: Webhook, image: str) -> bool:
    doc = {
        "apiVersion": "imagepolicy.k8s.io/v1alpha1",
        "kind": "ImageReview",
        "spec": {"containers": [{"image": image}], "namespace": "dev"},
    }
    return bool(hook.post("/imagereview", doc)["status"]["allowed"])


def check(hook: Webhook, image: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        [
            "check",
            "--rules",
            str(hook.directory / "rules"),
            "--config",
            str(hook.directory / "settings.yaml"),
            "--image",
            image,
        ],
        out=out,
        err=err,
    )
    assert code in (0, 1), err.getvalue()
    return code, out.getvalue()


def apply_patch(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """Apply a JSONPatch of `replace` operations as the API server does."""
    out = json.loads(json.dumps(obj))
    if "patch" not in response:
        return out
    assert response["patchType"] == "JSONPatch"
    for op in json.loads(base64.b64decode(response["patch"])):
        assert op["op"] == "replace"
        *parents, last = op["path"].split("/")[1:]
        target: Any = out
        for step in parents:
            target = target[int(step)] if isinstance(target, list) else target[step]
        key: Any = int(last) if isinstance(target, list) else last
        target[key]  # the path must exist: `replace` never adds
        target[key] = op["value"]
    return out


def decisions(hook: Webhook, image: str) -> dict[str, bool]:
    """The verdict on `image` through every door (mutate: allowed with its pin)."""
    code, _ = check(hook, image)
    return {
        "check": code == 0,
        "validate": validate(hook, image),
        "mutate": bool(mutate(hook, _pod(image), "Pod")["allowed"]),
        "imagereview": imagereview(hook, image),
    }


# --- host spellings ------------------------------------------------------------------------------

MINER_SPELLINGS = [
    "registry-1.docker.io:443/evilcorp/miner:1.0",
    "index.docker.io:443/evilcorp/miner:1.0",
    "INDEX.DOCKER.IO/evilcorp/miner:1.0",
    "Registry-1.Docker.IO/evilcorp/miner:1.0",
    "registry.hub.docker.com/evilcorp/miner:1.0",
    "docker.io:0443/evilcorp/miner:1.0",
]
NGINX_SPELLINGS = [
    "Registry-1.Docker.IO/library/nginx:1.25",
    "index.docker.io:443/nginx:1.25",
    "DOCKER.IO/library/nginx:1.25",
]


@pytest.mark.parametrize("spelling", MINER_SPELLINGS)
def test_every_spelling_of_docker_hub_meets_the_tier_rule(hook: Webhook, spelling: str) -> None:
    """The canonical form is denied by `trusted-tier` (evilcorp has no tier) on every door;
    so is each spelling, and the CLI names the canonical form beside the text."""
    canonical = decisions(hook, "docker.io/evilcorp/miner:1.0")
    assert canonical == dict.fromkeys(canonical, False)
    assert decisions(hook, spelling) == canonical
    _, out = check(hook, spelling)
    assert "trusted-tier" in out
    assert spelling in out and "docker.io/evilcorp/miner:1.0" in out


@pytest.mark.parametrize("spelling", NGINX_SPELLINGS)
def test_a_trusted_image_is_allowed_under_every_spelling(
    hook: Webhook, hub: Hub, spelling: str
) -> None:
    """Mixed case in the host only: the same decision as the canonical form on every door —
    denied unpinned (validate, imagereview, check), allowed pinned by /mutate."""
    canonical = decisions(hook, "nginx:1.25")
    assert canonical == {"check": False, "validate": False, "mutate": True, "imagereview": False}
    assert decisions(hook, spelling) == canonical
    pinned = f"{spelling}@{hub.nginx}"
    assert decisions(hook, pinned) == dict.fromkeys(canonical, True)


def test_the_path_stays_case_sensitive(hook: Webhook) -> None:
    """Only the host is case-insensitive: an upper-case repository path is no reference."""
    response = hook.post("/validate", _review(_pod("docker.io/EvilCorp/miner:1.0"), "Pod"))
    assert response["response"]["allowed"] is False
    assert "repository name must be lowercase" in response["response"]["status"]["message"]


# --- decorative tags ---------------------------------------------------------------------------


def test_an_exception_on_a_tag_glob_needs_the_tag_to_be_true(hook: Webhook, hub: Hub) -> None:
    """`mycorp/app:legacy-*` lifts non-root for the real legacy build, not for a root debug
    build written behind a `legacy-` tag."""
    real = f"mycorp/app:legacy-1@{hub.legacy}"
    assert decisions(hook, real) == dict.fromkeys(
        ("check", "validate", "mutate", "imagereview"), True
    )
    dodge = f"mycorp/app:legacy-1@{hub.debug}"
    assert decisions(hook, dodge) == dict.fromkeys(
        ("check", "validate", "mutate", "imagereview"), False
    )
    response = hook.post("/validate", _review(_pod(dodge), "Pod"))["response"]
    message = response["status"]["message"]
    assert "non-root" in message and f"docker.io/mycorp/app@{hub.debug}" in message
    points = f"tag legacy-1 points to {hub.legacy[:19]}…, not to {hub.debug[:19]}…"
    assert any(points in w for w in response["warnings"]), response["warnings"]


def test_deny_tags_reads_the_tag_the_registry_confirms(hook: Webhook, hub: Hub) -> None:
    """`denyTags` on a lying tag: the debug build behind `1.0` is judged by digest (and denied
    as root); `latest` written beside the digest of a build it does not name does not count."""
    assert not validate(hook, f"mycorp/app:1.0@{hub.debug}")
    assert validate(hook, f"mycorp/app:1.0@{hub.app}")
    # `latest` is denied when true... (no `latest` tag exists in the mirror, so it never is)
    response = hook.post("/validate", _review(_pod(f"mycorp/app:latest@{hub.app}"), "Pod"))
    # ... and judged by digest when it does not point there: allowed, with the warning.
    assert response["response"]["allowed"] is True
    assert any("tag latest could not be confirmed" in w for w in response["response"]["warnings"])


def resolve(hook: Webhook, image: str, *, code: int = 0) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    config = str(hook.directory / "settings.yaml")
    exit_code = cli.main(["resolve", image, "--json", "--config", config], out=out, err=err)
    document: dict[str, Any] = json.loads(out.getvalue())
    assert exit_code == code, (err.getvalue(), document["errors"])
    return document


def test_resolve_shows_the_canonical_reference_and_where_the_tag_points(
    hook: Webhook, hub: Hub
) -> None:
    lying = resolve(hook, f"Registry-1.Docker.IO:443/mycorp/app:1.0@{hub.debug}")
    assert lying["reference"] == f"docker.io/mycorp/app:1.0@{hub.debug}"
    assert lying["written"] == f"Registry-1.Docker.IO:443/mycorp/app:1.0@{hub.debug}"
    assert (lying["tagDigest"], lying["tagMatchesDigest"]) == (hub.app, False)
    true = resolve(hook, f"mycorp/app:1.0@{hub.app}")
    assert (true["tagDigest"], true["tagMatchesDigest"]) == (hub.app, True)
    # A tag naming an index is true for the index and for each entry it lists.
    for digest in (hub.multi.digest, hub.arm):
        entry = resolve(hook, f"mycorp/multi:1.0@{digest}")
        assert (entry["tagDigest"], entry["tagMatchesDigest"]) == (hub.multi.digest, True)
    # Another repository's digest: the tag is not there, and neither is the manifest — the
    # mirror says so, and the upstream it then falls through to (Docker Hub) cannot be
    # reached here: a fact is missing, exit 2.
    other = resolve(hook, f"mycorp/multi:1.0@{hub.app}", code=2)
    assert other["tagMatchesDigest"] is False
    assert "manifest" in other["errors"]
    assert "manifest unknown" in other["details"]["manifest"], other["details"]


# --- /mutate then /validate, as the API server calls them ----------------------------------------


def test_mutate_pins_what_it_judges_and_validate_allows_the_patched_object(
    hook: Webhook, hub: Hub
) -> None:
    """The shipped rules with `mutate.pin`: the patch pins every allowed tag-only image (so
    `pinned: digest: true` is met by the pin), and `/validate` allows the patched object."""
    deployment = _deployment(
        "nginx:1.25", "Registry-1.Docker.IO/mycorp/app:1.0", f"mycorp/app:legacy-1@{hub.legacy}"
    )
    before = mutate(hook, deployment, "Deployment", "apps")
    assert before["allowed"] is True, before
    patched = apply_patch(deployment, before)
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == [
        f"nginx:1.25@{hub.nginx}",
        f"Registry-1.Docker.IO/mycorp/app:1.0@{hub.app}",  # the text as written, pinned
        f"mycorp/app:legacy-1@{hub.legacy}",
    ]
    after = hook.post("/validate", _review(patched, "Deployment", "apps"))["response"]
    assert after["allowed"] is True, after
    # Unpatched, /validate denies it (the `pinned` rule): the order matters and is the API's.
    unpatched = hook.post("/validate", _review(deployment, "Deployment", "apps"))["response"]
    assert unpatched["allowed"] is False
    # A reinvocation on the patched object changes nothing.
    again = mutate(hook, patched, "Deployment", "apps")
    assert again["allowed"] is True and "patch" not in again


def test_mutate_denies_what_its_pin_would_not_pass(hook: Webhook) -> None:
    deployment = _deployment("nginx:1.25", "mycorp/app:1.0-debug")
    response = mutate(hook, deployment, "Deployment", "apps")
    assert response["allowed"] is False and "patch" not in response
    assert "non-root" in response["status"]["message"]


def test_rules_dir_is_the_shipped_default(hook: Webhook) -> None:
    """The webhook above judges with rules/default.yaml byte for byte (plus the exception)."""
    rules = hook.directory / "rules"
    assert (rules / "rules.yaml").read_bytes() == (ROOT / "rules" / "default.yaml").read_bytes()
    assert sorted(p.name for p in rules.iterdir()) == ["legacy.yaml", "rules.yaml"]
