"""Test infrastructure, shared by the tests and the benchmarks: real servers on loopback
(registry, token server, Redis) and how to start and stop them (procs), image pushing, signing
and attestations (images, cosign, attest, sigstore), certificate authorities (tlsca), counting
proxies and relays, hostile peers, review documents and a clock that moves when told to."""
