"""The embedded demo: a moto server on loopback, patched and seeded with a demo mesh."""
