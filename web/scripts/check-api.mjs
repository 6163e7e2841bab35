// Fails when src/api/ci/schema.d.ts is not what openapi-typescript makes of openapi.json
// (tests/api/test_ui_serving.py checks that openapi.json matches the live service).
// Regenerate both with `npm run gen:api`.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const dir = mkdtempSync(join(tmpdir(), 'schema-check-'))
try {
  const out = join(dir, 'schema.d.ts')
  execFileSync('npx', ['openapi-typescript', 'openapi.json', '--default-non-nullable=false', '-o', out], { stdio: 'pipe' })
  if (readFileSync(out, 'utf8') !== readFileSync('src/api/ci/schema.d.ts', 'utf8')) {
    console.error('src/api/ci/schema.d.ts is stale: run `npm run gen:api`')
    process.exit(1)
  }
  console.log('schema.d.ts matches openapi.json')
} finally {
  rmSync(dir, { recursive: true, force: true })
}
