// Drives the real @actions/artifact and @actions/cache packages, as a JavaScript action's step
// would, against the ACTIONS_* / GITHUB_* environment the test gives it.
// Usage: node toolkit.mjs <command> [args...]; prints one JSON line `RESULT {...}` at the end.
//   upload <name> <root-dir> [retention-days]     download <name> <dest-dir>
//   list                                          delete <name>
//   save-cache <path> <key>                       restore-cache <path> <key> [restore-key...]
import { DefaultArtifactClient } from '@actions/artifact';
import * as cache from '@actions/cache';
import fs from 'node:fs';
import path from 'node:path';

function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? walk(full) : [full];
  });
}

const [command, ...args] = process.argv.slice(2);
const artifacts = new DefaultArtifactClient();
let result;
try {
  switch (command) {
    case 'upload': {
      const [name, root, retention] = args;
      const options = retention ? { retentionDays: Number(retention) } : {};
      result = await artifacts.uploadArtifact(name, walk(root), root, options);
      break;
    }
    case 'download': {
      const [name, dest] = args;
      const { artifact } = await artifacts.getArtifact(name);
      const downloaded = await artifacts.downloadArtifact(artifact.id, {
        path: dest,
        expectedHash: artifact.digest,
      });
      result = { id: artifact.id, size: artifact.size, digest: artifact.digest, ...downloaded };
      break;
    }
    case 'list': {
      result = await artifacts.listArtifacts();
      break;
    }
    case 'delete': {
      result = await artifacts.deleteArtifact(args[0]);
      break;
    }
    case 'save-cache': {
      const [dir, key] = args;
      result = { cacheId: await cache.saveCache([dir], key) };
      break;
    }
    case 'restore-cache': {
      const [dir, key, ...restoreKeys] = args;
      result = { matchedKey: (await cache.restoreCache([dir], key, restoreKeys)) ?? null };
      break;
    }
    default:
      throw new Error(`unknown command ${command}`);
  }
  console.log(`RESULT ${JSON.stringify(result)}`);
} catch (error) {
  console.log(`ERROR ${JSON.stringify({ name: error.name, message: error.message })}`);
  process.exitCode = 1;
}
