"""Actions from git (`uses: owner/repo[/path]@ref`): fetch, cache by commit, read action.yml.

The seam for the runtime: `ActionFetcher(settings.actions_url, settings.actions_cache_dir,
settings.actions_git_timeout_seconds).fetch(uses)` gives a `FetchedAction` whose `manifest.kind`
says how to run it (`composite`: its `steps`; `node`: `main`/`pre`/`post` with `node`), with
`manifest.input_env(with_values)` for the `INPUT_*` variables. `docker` is refused
(`manifest.unsupported_reason`).
"""

from app.actions.errors import ActionError, ActionInfraError, ManifestError
from app.actions.fetch import ActionFetcher, ActionRef, FetchedAction, parse_uses
from app.actions.manifest import ActionInput, ActionManifest, load_manifest

__all__ = [
    "ActionError",
    "ActionFetcher",
    "ActionInfraError",
    "ActionInput",
    "ActionManifest",
    "ActionRef",
    "FetchedAction",
    "ManifestError",
    "load_manifest",
    "parse_uses",
]
