"""Test infrastructure: a real distribution registry, image pushing, a counting proxy and a
hostile registry, all on loopback."""
