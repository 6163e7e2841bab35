"""Actions from git (`uses: owner/repo[/path]@ref`): fetch, cache by commit, read action.yml.

The seam for the runtime: `ActionFetcher(settings.actions_url, settings.actions_cache_dir,
settings.actions_git_timeout_seconds).fetch(uses)` gives a `FetchedAction` whose `manifest.kind`
says how to run it (`composite`: its `steps`; `node`: `main`/`pre`/`post` with `node`), with
`manifest.input_env(with_values)` for the `INPUT_*` variables. `docker` is refused
(`manifest.unsupported_reason`). `app.actions.runtime` has the rest a runner needs for
JavaScript actions: `find_node` (a clear error without node), `node_phases` (pre/main/post with
their conditions), `action_env` (GITHUB_ACTION*, RUNNER_TEMP, RUNNER_TOOL_CACHE, INPUT_*,
STATE_*) and `parse_env_file` (`$GITHUB_STATE`).

In builds: `app.actions.support` resolves and pins a workflow's remote actions when the build is
created and loads them when it runs; `app.workflow.session` runs actions as steps (the step
invocation protocol runners implement).
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
