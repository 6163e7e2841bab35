// Starts a real `ci-executor serve` (SQLite, in-memory queue, local runner) in a temp folder,
// finds where the built UI is served, and launches Debian's chromium through playwright-core.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { createServer, request as httpRequest } from 'node:http'
import { createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, extname, join, normalize, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

export const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..')
export const ROOT = resolve(WEB, '..')
export const DIST = join(WEB, 'dist')
export const ARTIFACTS = join(WEB, 'test-artifacts')
export const TOKEN = 'e2e-secret'
export const READ_TOKEN = 'e2e-read-only'

const CLI = process.env.CI_EXECUTOR_BIN ?? join(ROOT, '.venv', 'bin', 'ci-executor')
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createNetServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolvePort(port))
    })
  })
}

/** Poll `check` until it returns a truthy value or the deadline passes. */
export async function until(check, { timeoutMs = 20_000, intervalMs = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  let lastError
  while (Date.now() < deadline) {
    try {
      const v = await check()
      if (v) return v
    } catch (e) {
      lastError = e
    }
    await new Promise((r) => setTimeout(r, intervalMs))
  }
  throw new Error(`timed out waiting for ${what}${lastError ? `: ${lastError}` : ''}`)
}

/**
 * Start a real service in a temp folder. `extraEnv` adds settings. The handle can also kill the
 * process (SIGKILL, as a crash) and start it again on the same port and database.
 */
export async function startService(extraEnv = {}) {
  if (!existsSync(CLI)) throw new Error(`${CLI} not found: create the venv (pip install -e .) first`)
  if (!existsSync(join(DIST, 'index.html'))) throw new Error(`${DIST}/index.html not found: run "npm run build" first`)
  const tmp = mkdtempSync(join(tmpdir(), 'ci-executor-e2e-'))
  mkdirSync(join(tmp, 'ws'))
  const port = await freePort()
  const env = {
    ...process.env,
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: `sqlite+aiosqlite:///${tmp}/e2e.db`,
    WORKSPACE_ROOT: join(tmp, 'ws'),
    QUEUE_URL: 'memory://',
    RUNNER: 'local',
    API_TOKENS: `e2e:${TOKEN}:write,viewer:${READ_TOKEN}:read`,
    LOG_FLUSH_INTERVAL_MS: '100',
    CANCEL_GRACE_SECONDS: '1',
    ...extraEnv,
  }
  // The service reads .env from its working directory; run it from the temp folder so a
  // developer's .env cannot change what the test sees.
  const migrate = spawnSync(CLI, ['migrate'], { cwd: tmp, env, encoding: 'utf8' })
  if (migrate.status !== 0) throw new Error(`migrate failed:\n${migrate.stdout}\n${migrate.stderr}`)
  const apiUrl = `http://127.0.0.1:${port}`
  let proc
  let output = ''

  /** Spawn `serve` and wait for /healthz; resolves with the time (Date.now()) it answered. */
  async function spawnServe() {
    proc = spawn(CLI, ['serve'], { cwd: tmp, env, stdio: ['ignore', 'pipe', 'pipe'] })
    const p = proc
    p.stdout.on('data', (d) => (output += d))
    p.stderr.on('data', (d) => (output += d))
    try {
      await until(
        async () => {
          if (p.exitCode !== null) throw new Error(`service exited with ${p.exitCode}:\n${output}`)
          return (await fetch(`${apiUrl}/readyz`)).ok
        },
        { timeoutMs: 30_000, intervalMs: 50, what: 'the service /readyz' },
      )
    } catch (e) {
      p.kill('SIGKILL')
      throw e
    }
    return Date.now()
  }

  async function exited(p, timeoutMs) {
    return until(() => p.exitCode !== null || p.signalCode !== null, { timeoutMs, intervalMs: 20, what: 'service exit' }).catch(() => false)
  }

  await spawnServe()

  // Prefer the service's own UI; without it, serve dist here and proxy /api to the service.
  let baseUrl = apiUrl
  let uiServer = null
  const home = await fetch(`${apiUrl}/ci/builds/1`).then((r) => (r.ok ? r.text() : ''))
  if (!home.includes('ci-executor-web')) {
    uiServer = await serveDist(port)
    baseUrl = `http://127.0.0.1:${uiServer.address().port}`
  }

  return {
    apiUrl,
    baseUrl,
    port,
    tmp,
    servesUi: uiServer === null,
    logs: () => output,
    async api(method, path, body) {
      const res = await fetch(`${apiUrl}/api/v1${path}`, {
        method,
        headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
      const text = await res.text()
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`)
      return text ? JSON.parse(text) : null
    },
    /** SIGKILL the service, as a crash would, and wait until the process is gone. */
    async kill() {
      proc.kill('SIGKILL')
      if (!(await exited(proc, 15_000))) throw new Error('the killed service did not exit')
    },
    /** Start the service again (same port, database and workspace); resolves with the time
     * /healthz first answered. */
    async restart() {
      return spawnServe()
    },
    async stop() {
      uiServer?.close()
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM')
        if (!(await exited(proc, 15_000))) proc.kill('SIGKILL')
      }
      rmSync(tmp, { recursive: true, force: true })
    },
  }
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.json': 'application/json' }

function serveDist(apiPort) {
  const server = createServer((req, res) => {
    if (req.url.startsWith('/api/')) {
      const upstream = httpRequest(
        { host: '127.0.0.1', port: apiPort, path: req.url, method: req.method, headers: req.headers },
        (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers)
          up.pipe(res)
        },
      )
      upstream.on('error', () => res.destroy())
      req.pipe(upstream)
      return
    }
    const path = normalize(decodeURIComponent(req.url.split('?')[0])).replace(/^(\.\.[/\\])+/, '')
    let file = join(DIST, path)
    if (!file.startsWith(DIST) || !existsSync(file) || statSync(file).isDirectory()) file = join(DIST, 'index.html')
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' })
    res.end(readFileSync(file))
  })
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)))
}

export async function launchBrowser() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  return {
    browser,
    async close() {
      await browser.close()
    },
  }
}

const AXE = join(WEB, 'node_modules', 'axe-core', 'axe.min.js')

/** Run axe-core on the page; returns the serious and critical violations (none expected). */
export async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) await page.addScriptTag({ path: AXE })
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] })
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }))
  })
  return result.filter((v) => v.impact === 'serious' || v.impact === 'critical')
}

/** How far the page is wider than the window (0: no horizontal overflow). */
export async function horizontalOverflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
}
