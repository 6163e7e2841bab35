"""Artifacts and caches: storage, the toolkit-facing services, policy (docs/actions.md)."""
