"""The actions toolkit proof's fixtures (tests/actions/test_toolkit_build.py), so that the module
here can extend its settings with the Kubernetes runner's."""

from tests.actions.test_toolkit_build import node_modules, settings_overrides

__all__ = ["node_modules", "settings_overrides"]
