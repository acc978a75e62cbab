"""Table tests for policy.reference: the distribution/reference grammar and Docker normalization.

Cases are our own, chosen after reading distribution/reference's normalize_test.go,
reference_test.go and regexp_test.go (v0.6) and go-digest's Validate.
"""

from __future__ import annotations

import pytest

from policy import reference
from policy.errors import InvalidReference, PolicyError
from policy.reference import Reference, parse, split_domain

D = "sha256:" + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
D384 = "sha384:" + "38b060a751ac9638" * 6
D512 = "sha512:" + "cf83e1357eefb8bd" * 8
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"
HUB = "docker.io"
# 64 characters, not all hex: a valid name.
SONG = "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev"


def ok(
    text: str,
    registry: str,
    repository: str,
    tag: str | None = None,
    digest: str | None = None,
    *,
    canonical: str | None = None,
    familiar: str | None = None,
) -> object:
    """A valid case: the parts parse(text) must yield, its full and familiar forms.

    `canonical` and `familiar` default to `text` itself.
    """
    return pytest.param(
        text,
        registry,
        repository,
        tag,
        digest,
        text if canonical is None else canonical,
        text if familiar is None else familiar,
        id=_id(text),
    )


def bad(text: str, problem: str) -> object:
    """An invalid case: parse(text) raises InvalidReference whose problem matches `problem`."""
    return pytest.param(text, problem, id=_id(text))


def _id(text: str) -> str:
    shown = text if len(text) <= 60 else f"{text[:40]}...({len(text)} chars)"
    return repr(shown)


VALID = [
    # Docker Hub normalization: library/ for single components, docker.io added or kept.
    ok("nginx", HUB, "library/nginx", canonical="docker.io/library/nginx"),
    ok("nginx:1.25", HUB, "library/nginx", "1.25", canonical="docker.io/library/nginx:1.25"),
    ok("nginx:latest", HUB, "library/nginx", "latest", canonical="docker.io/library/nginx:latest"),
    ok(
        "library/nginx", HUB, "library/nginx", canonical="docker.io/library/nginx", familiar="nginx"
    ),
    ok(
        "docker.io/nginx",
        HUB,
        "library/nginx",
        canonical="docker.io/library/nginx",
        familiar="nginx",
    ),
    ok("docker.io/library/nginx", HUB, "library/nginx", familiar="nginx"),
    ok(
        "index.docker.io/library/nginx",
        HUB,
        "library/nginx",
        canonical="docker.io/library/nginx",
        familiar="nginx",
    ),
    ok(
        "index.docker.io/nginx",
        HUB,
        "library/nginx",
        canonical="docker.io/library/nginx",
        familiar="nginx",
    ),
    ok(
        "index.docker.io/mycorp/app",
        HUB,
        "mycorp/app",
        canonical="docker.io/mycorp/app",
        familiar="mycorp/app",
    ),
    ok("index.docker.io/a/b/c", HUB, "a/b/c", canonical="docker.io/a/b/c", familiar="a/b/c"),
    # Our addition: registry-1.docker.io is Docker Hub's wire host.
    ok(
        "registry-1.docker.io/library/nginx:1.25",
        HUB,
        "library/nginx",
        "1.25",
        canonical="docker.io/library/nginx:1.25",
        familiar="nginx:1.25",
    ),
    ok(
        "registry-1.docker.io/nginx",
        HUB,
        "library/nginx",
        canonical="docker.io/library/nginx",
        familiar="nginx",
    ),
    ok(
        "registry-1.docker.io/mycorp/app",
        HUB,
        "mycorp/app",
        canonical="docker.io/mycorp/app",
        familiar="mycorp/app",
    ),
    # ... in any case and with the HTTPS port written out: one canonical identity, as the
    # runtime pulls every one of these from Docker Hub (Go keeps them as other domains).
    ok(
        "registry-1.docker.io:443/nginx",
        HUB,
        "library/nginx",
        canonical="docker.io/library/nginx",
        familiar="nginx",
    ),
    ok(
        "docker.io:443/nginx",
        HUB,
        "library/nginx",
        canonical=f"{HUB}/library/nginx",
        familiar="nginx",
    ),
    ok(
        "INDEX.DOCKER.IO/nginx",
        HUB,
        "library/nginx",
        canonical=f"{HUB}/library/nginx",
        familiar="nginx",
    ),
    ok(
        "Registry-1.Docker.IO:0443/evilcorp/miner:1.0",
        HUB,
        "evilcorp/miner",
        "1.0",
        canonical="docker.io/evilcorp/miner:1.0",
        familiar="evilcorp/miner:1.0",
    ),
    ok(
        "registry.hub.docker.com/mycorp/app",
        HUB,
        "mycorp/app",
        canonical="docker.io/mycorp/app",
        familiar="mycorp/app",
    ),
    # Another port, or a host that is not on the table, is another registry.
    ok("docker.io:5000/nginx", "docker.io:5000", "nginx"),
    ok("hub.docker.com/mycorp/app", "hub.docker.com", "mycorp/app"),
    ok("mirror.gcr.io/library/nginx", "mirror.gcr.io", "library/nginx"),
    ok("mycorp/app", HUB, "mycorp/app", canonical="docker.io/mycorp/app"),
    ok("docker.io/mycorp/app:v1", HUB, "mycorp/app", "v1", familiar="mycorp/app:v1"),
    ok("library/foo/bar", HUB, "library/foo/bar", canonical="docker.io/library/foo/bar"),
    ok("docker.io/library/foo/bar", HUB, "library/foo/bar", familiar="library/foo/bar"),
    ok("store/foo/bar", HUB, "store/foo/bar", canonical="docker.io/store/foo/bar"),
    ok("other/library", HUB, "other/library", canonical="docker.io/other/library"),
    ok("library", HUB, "library/library", canonical="docker.io/library/library"),
    ok(
        "ubuntu-12.04-base",
        HUB,
        "library/ubuntu-12.04-base",
        canonical="docker.io/library/ubuntu-12.04-base",
    ),
    ok("a/b/c/d/e/f", HUB, "a/b/c/d/e/f", canonical="docker.io/a/b/c/d/e/f"),
    ok("1", HUB, "library/1", canonical="docker.io/library/1"),
    ok("1/2", HUB, "1/2", canonical="docker.io/1/2"),
    # localhost is always a domain when followed by "/", never without.
    ok("localhost/foo", "localhost", "foo"),
    ok("localhost:5000/foo", "localhost:5000", "foo"),
    ok("localhost:5000/foo/bar:tag", "localhost:5000", "foo/bar", "tag"),
    ok("localhost/library/debian", "localhost", "library/debian"),
    ok("localhost", HUB, "library/localhost", canonical="docker.io/library/localhost"),
    ok(
        "localhost:5000",
        HUB,
        "library/localhost",
        "5000",
        canonical="docker.io/library/localhost:5000",
    ),
    ok(
        f"localhost@{D}",
        HUB,
        "library/localhost",
        None,
        D,
        canonical=f"docker.io/library/localhost@{D}",
    ),
    ok(
        f"localhost:8080@{D}",
        HUB,
        "library/localhost",
        "8080",
        D,
        canonical=f"docker.io/library/localhost:8080@{D}",
    ),
    # Without a "/", a host-like name is a Docker Hub repository and ":5000" is a tag.
    ok(
        "test.com:5000",
        HUB,
        "library/test.com",
        "5000",
        canonical="docker.io/library/test.com:5000",
    ),
    ok("test.com:tag", HUB, "library/test.com", "tag", canonical="docker.io/library/test.com:tag"),
    ok("test.com", HUB, "library/test.com", canonical="docker.io/library/test.com"),
    ok(
        "foo_bar.com:8080",
        HUB,
        "library/foo_bar.com",
        "8080",
        canonical="docker.io/library/foo_bar.com:8080",
    ),
    ok("192.168.1.1", HUB, "library/192.168.1.1", canonical="docker.io/library/192.168.1.1"),
    ok(
        "192.168.1.1:5000",
        HUB,
        "library/192.168.1.1",
        "5000",
        canonical="docker.io/library/192.168.1.1:5000",
    ),
    # Domains: a "." or a ":" in the first component makes it one.
    ok("test.com/repo:tag", "test.com", "repo", "tag"),
    ok("test:5000/repo", "test:5000", "repo"),
    ok("test:5000/repo:tag", "test:5000", "repo", "tag"),
    ok(f"test:5000/repo@{D}", "test:5000", "repo", None, D),
    ok(f"test:5000/repo:tag@{D}", "test:5000", "repo", "tag", D),
    ok("test-com:8080/foo", "test-com:8080", "foo"),
    ok("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
    ok("192.168.1.1/repo", "192.168.1.1", "repo"),
    ok("192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "repo", "5050"),
    ok("127.0.0.1:5000/library/debian", "127.0.0.1:5000", "library/debian"),
    # a single label keeps :443: without it `myreg/x` would name Docker Hub's myreg/x
    ok("myreg:443/x", "myreg:443", "x", canonical="myreg:443/x", familiar="myreg:443/x"),
    ok("0:443/0", "0:443", "0", canonical="0:443/0", familiar="0:443/0"),
    ok("localhost:443/x", "localhost", "x", canonical="localhost/x", familiar="localhost/x"),
    ok(
        "example.com:443/x", "example.com", "x", canonical="example.com/x", familiar="example.com/x"
    ),
    ok(
        "example.com:00443/x",
        "example.com",
        "x",
        canonical="example.com/x",
        familiar="example.com/x",
    ),
    ok(
        "example.com:080/x",
        "example.com:80",
        "x",
        canonical="example.com:80/x",
        familiar="example.com:80/x",
    ),
    ok("example.com:80/x", "example.com:80", "x"),
    ok("a.b/c", "a.b", "c"),
    ok("a.b.c.d.e/x", "a.b.c.d.e", "x"),
    ok("0101.com/x", "0101.com", "x"),
    ok("e--x.com/x", "e--x.com", "x"),
    ok(
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        "sub-dom1.foo.com",
        "bar/baz/quux",
        "some-long-tag",
    ),
    ok(
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io",
        "test.example.com/my-app",
        "test.example.com",
    ),
    ok("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", "myimage", "xn--n3h.com"),
    ok(
        f"xn--7o8h.com/myimage:xn--7o8h.com@{D512}", "xn--7o8h.com", "myimage", "xn--7o8h.com", D512
    ),
    ok(
        "registry.io/foo/project--id.module--name.ver---sion--name",
        "registry.io",
        "foo/project--id.module--name.ver---sion--name",
    ),
    ok(
        "example.com/some_separator__underscore/myimage",
        "example.com",
        "some_separator__underscore/myimage",
    ),
    # IPv6 hosts in brackets, with or without a port.
    ok("[::1]:5000/x", "[::1]:5000", "x"),
    ok("[::1]/x", "[::1]", "x"),
    ok("[2001:db8::1]/repo", "[2001:db8::1]", "repo"),
    ok("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]", "repo", "tag"),
    ok(f"[2001:db8::1]:5000/repo:tag@{D}", "[2001:db8::1]:5000", "repo", "tag", D),
    ok("[2001:db8::]:5000/repo", "[2001:db8::]:5000", "repo"),
    ok("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000", "library/debian"),
    # IPv6 literals in their compressed, lower-case form.
    ok("[FD00::1]/x", "[fd00::1]", "x", canonical="[fd00::1]/x", familiar="[fd00::1]/x"),
    ok("[0:0:0:0:0:0:0:1]:443/x", "[::1]", "x", canonical="[::1]/x", familiar="[::1]/x"),
    ok("[::1]:05000/x", "[::1]:5000", "x", canonical="[::1]:5000/x", familiar="[::1]:5000/x"),
    # Uppercase is allowed in the domain (and lower-cased); `localhost` in any case.
    ok("FOO.com/bar", "foo.com", "bar", canonical="foo.com/bar", familiar="foo.com/bar"),
    ok(
        "Asdf.com/foo/bar:tag",
        "asdf.com",
        "foo/bar",
        "tag",
        canonical="asdf.com/foo/bar:tag",
        familiar="asdf.com/foo/bar:tag",
    ),
    ok("Foo:5000/bar", "foo:5000", "bar", canonical="foo:5000/bar", familiar="foo:5000/bar"),
    ok("LocalHost/x", "localhost", "x", canonical="localhost/x", familiar="localhost/x"),
    # Path separators: ".", "_", "__", any run of "-".
    ok("a--b", HUB, "library/a--b", canonical="docker.io/library/a--b"),
    ok("a---b/c", HUB, "a---b/c", canonical="docker.io/a---b/c"),
    ok(
        "docker---rules/docker",
        HUB,
        "docker---rules/docker",
        canonical="docker.io/docker---rules/docker",
    ),
    ok("a.b", HUB, "library/a.b", canonical="docker.io/library/a.b"),
    ok("a_b", HUB, "library/a_b", canonical="docker.io/library/a_b"),
    ok("a__b", HUB, "library/a__b", canonical="docker.io/library/a__b"),
    ok("a_b/c", HUB, "a_b/c", canonical="docker.io/a_b/c"),
    ok("a-b/c", HUB, "a-b/c", canonical="docker.io/a-b/c"),
    ok("test_com/foo", HUB, "test_com/foo", canonical="docker.io/test_com/foo"),
    ok("dock__er/docker", HUB, "dock__er/docker", canonical="docker.io/dock__er/docker"),
    ok(
        "foo/foo_bar.com:8080",
        HUB,
        "foo/foo_bar.com",
        "8080",
        canonical="docker.io/foo/foo_bar.com:8080",
    ),
    ok("d/docker", HUB, "d/docker", canonical="docker.io/d/docker"),
    ok("jess/t", HUB, "jess/t", canonical="docker.io/jess/t"),
    # Tags: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}, case kept.
    ok(
        "lowercase:Uppercase",
        HUB,
        "library/lowercase",
        "Uppercase",
        canonical="docker.io/library/lowercase:Uppercase",
    ),
    ok(
        "foo:TAG_5.x-y",
        HUB,
        "library/foo",
        "TAG_5.x-y",
        canonical="docker.io/library/foo:TAG_5.x-y",
    ),
    ok("foo:_x", HUB, "library/foo", "_x", canonical="docker.io/library/foo:_x"),
    ok("foo:1", HUB, "library/foo", "1", canonical="docker.io/library/foo:1"),
    ok(
        "foo:v1.0.0-rc.1",
        HUB,
        "library/foo",
        "v1.0.0-rc.1",
        canonical="docker.io/library/foo:v1.0.0-rc.1",
    ),
    ok(
        "foo:" + "t" * 128,
        HUB,
        "library/foo",
        "t" * 128,
        canonical="docker.io/library/foo:" + "t" * 128,
    ),
    # Digests, alone and with a tag (both kept).
    ok(
        f"busybox:latest@{D}",
        HUB,
        "library/busybox",
        "latest",
        D,
        canonical=f"docker.io/library/busybox:latest@{D}",
    ),
    ok(
        f"docker.io/library/nginx:1.25@{D}",
        HUB,
        "library/nginx",
        "1.25",
        D,
        familiar=f"nginx:1.25@{D}",
    ),
    ok(f"ghcr.io/org/app@{D}", "ghcr.io", "org/app", None, D),
    ok(f"quay.io/org/app:v1@{D512}", "quay.io", "org/app", "v1", D512),
    ok(f"foo@{D384}", HUB, "library/foo", None, D384, canonical=f"docker.io/library/foo@{D384}"),
    ok(
        f"mycorp/app@{D512}",
        HUB,
        "mycorp/app",
        None,
        D512,
        canonical=f"docker.io/mycorp/app@{D512}",
    ),
    # 64 hex characters are rejected only as the whole input.
    ok(
        f"docker.io/{HEX64}",
        HUB,
        f"library/{HEX64}",
        canonical=f"docker.io/library/{HEX64}",
        familiar=HEX64,
    ),
    ok(f"mycorp/{HEX64}", HUB, f"mycorp/{HEX64}", canonical=f"docker.io/mycorp/{HEX64}"),
    ok(f"{HEX64}:tag", HUB, f"library/{HEX64}", "tag", canonical=f"docker.io/library/{HEX64}:tag"),
    ok(HEX64[:63], HUB, f"library/{HEX64[:63]}", canonical=f"docker.io/library/{HEX64[:63]}"),
    ok(
        HEX64 + "a",
        HUB,
        f"library/{HEX64}a",
        canonical=f"docker.io/library/{HEX64}a",
        familiar=f"{HEX64}a",
    ),
    ok(SONG, HUB, f"library/{SONG}", canonical=f"docker.io/library/{SONG}"),
    # Length: the path (after normalization) may be 255 characters; the domain is not counted.
    ok("example.com/" + "a" * 255, "example.com", "a" * 255),
    ok("a" * 247, HUB, "library/" + "a" * 247, canonical="docker.io/library/" + "a" * 247),
    ok(
        "a/" * 127 + "a:tag-puts-this-over-max",
        HUB,
        "a/" * 127 + "a",
        "tag-puts-this-over-max",
        canonical="docker.io/" + "a/" * 127 + "a:tag-puts-this-over-max",
    ),
    ok("x" * 300 + ".com/" + "a" * 255, "x" * 300 + ".com", "a" * 255),
]

INVALID = [
    bad("", "repository name must not be empty"),
    bad(":justtag", "repository name must not be empty"),
    bad(f"@{D}", "repository name must not be empty"),
    bad(HEX64, r"invalid repository name \(64 hex chars\), cannot specify 64-byte hexadecimal"),
    bad("f" * 64, "cannot specify 64-byte hexadecimal strings"),
    # Uppercase in the path.
    bad("A" * 64, "repository name must be lowercase"),
    bad("Uppercase:tag", "repository name must be lowercase"),
    bad("Foo", "repository name must be lowercase"),
    bad("foo/Bar", "repository name must be lowercase"),
    bad("docker/Docker", "repository name must be lowercase"),
    bad("docker.io/docker/Docker", "repository name must be lowercase"),
    bad("test:5000/Uppercase/lowercase:tag", "repository name must be lowercase"),
    bad("localhost/Foo", "repository name must be lowercase"),
    bad("Foo/Bar", "repository name must be lowercase"),
    bad("FOO.com/Bar", "repository name must be lowercase"),
    bad("ÜNICODE", "repository name must be lowercase"),
    # Go's own quirks: a domain that is only valid lowercased, and "@SHA256" before the first ":".
    bad("Foo_bar/x", "invalid domain .foo_bar."),
    bad(f"foo@SHA256:{D[7:]}", "repository name must be lowercase"),
    # Length.
    bad("a/" * 128 + "a:tag", r"repository name too long \(max 255\)"),
    bad("example.com/" + "a" * 256, r"repository name too long \(max 255\)"),
    bad("a" * 248, r"repository name too long \(max 255\).* 256 characters"),
    bad("domain/" + "a" * 256, r"repository name too long \(max 255\)"),
    # Path components and separators.
    bad("aa/asdf$$^/aa", r"invalid reference format: invalid path component 'asdf\$\$\^'"),
    bad("a..b", "invalid path component 'a..b'"),
    bad("a___b", "invalid path component 'a___b'"),
    bad("a-", "invalid path component 'a-'"),
    bad("-a", "invalid path component '-a'"),
    bad("a_", "invalid path component 'a_'"),
    bad("_a", "invalid path component '_a'"),
    bad(".a", "invalid path component '.a'"),
    bad("a.", "invalid path component 'a.'"),
    bad("a-.b", "invalid path component 'a-.b'"),
    bad("a_.b", "invalid path component 'a_.b'"),
    bad("a.-b", "invalid path component 'a.-b'"),
    bad("dock..er/docker", "invalid domain 'dock..er'"),
    bad("-docker", "invalid path component '-docker'"),
    bad("-docker/docker", "invalid path component '-docker'"),
    bad("docker-/docker", "invalid path component 'docker-'"),
    bad("foo/bar-", "invalid path component 'bar-'"),
    bad("foo.com/a-/a/a", "invalid path component 'a-'"),
    bad("____/____", "invalid path component '____'"),
    bad("_docker/_docker", "invalid path component '_docker'"),
    bad("example.com/__underscore/myimage", "invalid path component '__underscore'"),
    bad("example.com/.dots/myimage", "invalid path component '.dots'"),
    bad("docker///docker", "empty path component"),
    bad("docker/", "empty path component"),
    bad("docker.io/docker///docker", "empty path component"),
    bad("foo//bar", "empty path component"),
    bad("/foo", "empty path component"),
    bad("foo.com/", "empty path component"),
    bad("nginx ", "invalid path component 'nginx '"),
    bad(" nginx", "invalid path component ' nginx'"),
    bad("nginx\n", r"invalid path component 'nginx\\n'"),
    bad("foo bar", "invalid path component"),
    bad("ünicode", "invalid path component"),
    bad("foo/bar:tag/baz", "invalid path component 'bar:tag'"),
    # Domains.
    bad("-docker.io/docker/docker", "invalid domain '-docker.io'"),
    bad("https://github.com/docker/docker", "invalid domain 'https:'"),
    bad("[fe80::1%eth0]:5000/repo", "invalid domain"),
    bad("[fe80::1%eth0]/repo", "invalid domain"),
    bad("[fe80::1%@invalidzone]:5000/repo", "invalid"),
    bad("fc00::1:5000/debian", "invalid domain 'fc00::1:5000'"),
    bad("[2001:db8:3:4::192.0.2.33]:5000/debian", "invalid domain"),
    bad("[fd00:1:2::3]75050/x", "invalid domain"),
    # Go accepts these; no runtime can pull them, and they have no canonical spelling.
    bad("192.168.1.1:750050/x", "invalid port 750050"),
    bad("example.com:0/x", "invalid port 0"),
    bad("[fd00123123123]:75050/x", "invalid IPv6 address"),
    bad("[::1::2]/x", "invalid IPv6 address"),
    bad("Foo/bar", "'Foo' is a registry host only because of its capital letters"),
    bad("FOO/bar", "only because of its capital letters"),
    bad("Docker/docker", "only because of its capital letters"),
    bad("bad_hostname.com:8080/myapp:tag", "invalid domain 'bad_hostname.com:8080'"),
    bad("do__cker:8080/docker", "invalid domain"),
    bad("foo.com:http/bar", "invalid domain 'foo.com:http'"),
    bad("localhost:http/name", "invalid domain"),
    bad("example.com:/x", "invalid domain"),
    bad("ab-.com/x", "invalid domain"),
    bad("ab.-com/x", "invalid domain"),
    bad("-ab.com/x", "invalid domain"),
    # Go would return a reference with no domain at all here; we refuse it (see module doc).
    bad("foo_bar.com/x", "invalid domain 'foo_bar.com'"),
    # An IPv6 literal needs a following path; without "/" the brackets are in a path.
    bad("[2001:db8::1]", "invalid reference format"),
    bad("[2001:db8::1]:5000", "invalid reference format"),
    bad("[2001:db8::1]:tag", "invalid reference format"),
    bad("[fe80::1%eth0]", "invalid reference format"),
    # Tags.
    bad("foo:", "invalid tag ''"),
    bad("foo:-x", "invalid tag '-x'"),
    bad("foo:.x", "invalid tag '.x'"),
    bad("foo:" + "t" * 129, "invalid tag"),
    bad("foo:invalid~tag", "invalid tag 'invalid~tag'"),
    bad("foo:ta g", "invalid tag 'ta g'"),
    bad("nginx:1.25\n", "invalid tag"),
    bad("foo:tag:tag", "invalid path component 'foo:tag'"),
    # Digests: the reference grammar first, then go-digest's Validate.
    bad("foo@", "invalid digest ''"),
    bad("foo@sha256:abc", "invalid digest 'sha256:abc'"),
    bad("foo@sha256:" + "f" * 31, "invalid reference format: invalid digest"),
    bad("foo@sha256:" + "g" * 64, "invalid reference format: invalid digest"),
    bad("foo@2bad", "invalid digest '2bad'"),
    bad("registry.com:8080/myapp@bad", "invalid digest 'bad'"),
    bad(f"foo@{D}@{D}", "invalid digest"),
    bad("foo@sha256:" + "f" * 32, "invalid digest length: sha256 needs 64 hex characters, got 32"),
    bad("foo@sha256:" + "f" * 63, "invalid digest length"),
    bad("foo@sha256:" + "f" * 65, "invalid digest length"),
    bad("foo@sha256:" + "f" * 128, "invalid digest length"),
    bad("foo@sha512:" + "f" * 64, "invalid digest length: sha512 needs 128"),
    bad("foo@sha384:" + "f" * 64, "invalid digest length: sha384 needs 96"),
    bad("foo@sha256:" + "F" * 64, "invalid digest format: sha256 hex must be lowercase"),
    bad("foo@sha256:" + "f" * 63 + "A", "invalid digest format"),
    bad("foo@sha512:" + "F" * 128, "invalid digest format"),
    bad(f"foo:tag@SHA256:{D[7:]}", "invalid digest format: algorithm 'SHA256'"),
    bad("foo@md5:" + "f" * 32, "unsupported digest algorithm 'md5'"),
    bad("validname@invaliddigest:" + "f" * 64, "unsupported digest algorithm"),
    bad("foo@blake3:" + "f" * 64, "unsupported digest algorithm"),
    bad("foo@sha256+b64:" + "f" * 64, "unsupported digest algorithm 'sha256\\+b64'"),
]


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "canonical", "familiar"), VALID
)
def test_parse_valid(
    text: str,
    registry: str,
    repository: str,
    tag: str | None,
    digest: str | None,
    canonical: str,
    familiar: str,
) -> None:
    """A valid reference parses to the normalized parts, prints in full and in familiar form."""
    ref = parse(text)
    assert ref == Reference(registry=registry, repository=repository, tag=tag, digest=digest)
    assert str(ref) == canonical
    assert ref.familiar == familiar
    assert parse(canonical) == ref


@pytest.mark.parametrize(("text", "problem"), INVALID)
def test_parse_invalid(text: str, problem: str) -> None:
    """An invalid reference raises InvalidReference naming the problem and the input."""
    with pytest.raises(InvalidReference, match=problem) as caught:
        parse(text)
    assert caught.value.text == text


def test_table_is_large() -> None:
    """The tables above stay at least 150 cases, as promised in the design."""
    assert len(VALID) + len(INVALID) >= 150


def test_invalid_reference_is_a_value_error_and_a_policy_error() -> None:
    """Callers may catch either ValueError or PolicyError; the message names input and problem."""
    with pytest.raises(ValueError, match=r"invalid image reference 'foo/Bar': .*lowercase"):
        parse("foo/Bar")
    with pytest.raises(PolicyError):
        parse("")


def test_long_inputs_are_parsed_uncached_with_the_same_result() -> None:
    """Inputs over the cache bound go through the same parser."""
    text = "r" * 1100 + ".example.com/app:1"
    assert len(text) > reference._CACHE_TEXT_MAX
    assert parse(text) == Reference("r" * 1100 + ".example.com", "app", "1")
    with pytest.raises(InvalidReference, match="invalid path component"):
        parse("a" * 2000 + "-")


def test_parse_is_cached_for_short_inputs() -> None:
    """A repeated parse returns the very same (immutable) object."""
    assert parse("ghcr.io/cache/me:1") is parse("ghcr.io/cache/me:1")


@pytest.mark.parametrize(
    ("name", "domain", "path"),
    [
        ("nginx", "docker.io", "library/nginx"),
        ("nginx:1.25", "docker.io", "library/nginx:1.25"),
        ("library/nginx", "docker.io", "library/nginx"),
        ("docker.io/nginx", "docker.io", "library/nginx"),
        ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
        ("index.docker.io/nginx", "docker.io", "library/nginx"),
        ("index.docker.io/team/app", "docker.io", "team/app"),
        ("registry-1.docker.io/nginx", "docker.io", "library/nginx"),
        ("registry-1.docker.io/team/*", "docker.io", "team/*"),
        ("team/app", "docker.io", "team/app"),
        ("test_com/foo", "docker.io", "test_com/foo"),
        ("localhost/foo", "localhost", "foo"),
        ("localhost", "docker.io", "library/localhost"),
        ("test.com:8080/foo", "test.com:8080", "foo"),
        ("test-com:8080/foo", "test-com:8080", "foo"),
        ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
        ("[::1]:5000/x", "[::1]:5000", "x"),
        ("Foo/bar", "foo", "bar"),
        ("GHCR.IO:443/x", "ghcr.io", "x"),
        ("Index.Docker.IO/nginx", "docker.io", "library/nginx"),
        ("registry-1.docker.io:443/team/app", "docker.io", "team/app"),
        # Patterns: nothing is validated.
        ("*", "docker.io", "library/*"),
        ("docker.io/*", "docker.io", "library/*"),
        ("*/app", "docker.io", "*/app"),
        ("ghcr.io/**", "ghcr.io", "**"),
        ("*.example.com/app", "*.example.com", "app"),
        ("", "docker.io", "library/"),
    ],
)
def test_split_domain(name: str, domain: str, path: str) -> None:
    """split_domain applies Docker's domain and library/ normalization only."""
    assert split_domain(name) == (domain, path)


@pytest.mark.parametrize(
    ("ref", "familiar"),
    [
        (Reference("docker.io", "library/nginx", "1.25"), "nginx:1.25"),
        (Reference("docker.io", "library/nginx"), "nginx"),
        (Reference("docker.io", "library/foo/bar"), "library/foo/bar"),
        (Reference("docker.io", "mycorp/app"), "mycorp/app"),
        (Reference("docker.io", "mycorp/app", None, D), f"mycorp/app@{D}"),
        (Reference("ghcr.io", "library/nginx", "1"), "ghcr.io/library/nginx:1"),
        (Reference("localhost:5000", "app", "t", D), f"localhost:5000/app:t@{D}"),
    ],
)
def test_familiar(ref: Reference, familiar: str) -> None:
    """familiar drops docker.io/ and a non-nested library/, and nothing elsewhere."""
    assert ref.familiar == familiar


@pytest.mark.parametrize(
    ("text", "tag", "expected"),
    [
        ("nginx", "1.25", "docker.io/library/nginx:1.25"),
        ("nginx:old", "new", "docker.io/library/nginx:new"),
        (f"nginx@{D}", "1", f"docker.io/library/nginx:1@{D}"),
        ("ghcr.io/o/a:x", "T" * 128, "ghcr.io/o/a:" + "T" * 128),
    ],
)
def test_with_tag(text: str, tag: str, expected: str) -> None:
    """with_tag sets the tag and keeps the digest."""
    assert str(parse(text).with_tag(tag)) == expected


@pytest.mark.parametrize("tag", ["", "-x", ".x", "a b", "a:b", "a@b", "t" * 129, "ü"])
def test_with_tag_rejects_invalid_tags(tag: str) -> None:
    """with_tag raises InvalidReference for a tag outside the tag grammar."""
    with pytest.raises(InvalidReference, match="invalid tag"):
        parse("nginx").with_tag(tag)


@pytest.mark.parametrize(
    ("text", "digest", "expected"),
    [
        ("nginx", D, f"docker.io/library/nginx@{D}"),
        ("nginx:1.25", D, f"docker.io/library/nginx:1.25@{D}"),
        (f"ghcr.io/o/a@{D}", D512, f"ghcr.io/o/a@{D512}"),
    ],
)
def test_with_digest(text: str, digest: str, expected: str) -> None:
    """with_digest pins the digest and keeps the tag; the result parses back to itself."""
    ref = parse(text).with_digest(digest)
    assert str(ref) == expected
    assert parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("digest", "problem"),
    [
        ("", "invalid digest format"),
        ("foo", "invalid digest format"),
        (D[7:], "invalid digest format"),
        ("sha256:abc", "invalid digest format"),
        ("sha256:" + "f" * 40, "invalid digest length"),
        ("sha256:" + "F" * 64, "hex must be lowercase"),
        ("md5:" + "f" * 32, "unsupported digest algorithm"),
        ("SHA256:" + "f" * 64, "invalid digest format"),
    ],
)
def test_with_digest_rejects_invalid_digests(digest: str, problem: str) -> None:
    """with_digest applies the same digest checks as parse."""
    with pytest.raises(InvalidReference, match=problem):
        parse("nginx").with_digest(digest)
