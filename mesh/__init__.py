"""Mesh Marketplace: self-service access to a Lake Formation data mesh."""
