"""Errors of actions from git."""

from __future__ import annotations


class ActionError(Exception):
    """The action cannot be used: a message for the step's log, naming what and why."""


class ActionInfraError(ActionError):
    """git or the action server failed (unreachable, timeout): not the workflow's fault."""


class ManifestError(ActionError):
    """The action's action.yml is missing or invalid."""
