// End-to-end: the live log across a server crash and restart (issue 14, item 11). A real
// `ci-executor serve` is SIGKILLed while a build page follows its stream, then started again on
// the same port and database. The page must resume the stream without duplicates, leave
// "reconnecting…" on its first attempt after the server is ready, and never shift its layout.
// Its own service: the other e2e file shares one that must not be killed under it.
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { ARTIFACTS, TOKEN, axeViolations, launchBrowser, startService, until } from './harness.mjs'

let svc
let browser
let page
let go = ''
const pageErrors = []

/** Page-relative boxes of the parts of the build page that a banner would push around. */
async function layout() {
  return page.evaluate(() => {
    const pick = {
      title: '#build-title',
      head: 'section.build-head',
      meta: 'section.build-head dl.meta',
      jobs: 'section[aria-labelledby="dag-title"]',
      jobPanel: 'section.job-panel',
      stepHead: 'li.step[data-step="0"] .step-head',
    }
    const out = {}
    for (const [k, sel] of Object.entries(pick)) {
      const el = document.querySelector(sel)
      if (!el) throw new Error(`${sel} is missing`)
      const r = el.getBoundingClientRect()
      out[k] = { x: Math.round(r.x + scrollX), y: Math.round(r.y + scrollY), width: Math.round(r.width) }
      // The job panel grows with its log; the rest must keep its size too.
      if (k !== 'jobPanel') out[k].height = Math.round(r.height)
    }
    return out
  })
}

const connNote = () => page.locator('.build-head .conn')

describe('live log across a server restart', { timeout: 240_000 }, () => {
  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true })
    // A short lease, so the restarted service takes the dead replica's build over promptly.
    svc = await startService({ LEASE_SECONDS: '3' })
    browser = await launchBrowser()
    const ctx = await browser.browser.newContext({ viewport: { width: 1366, height: 900 } })
    await ctx.addInitScript((t) => localStorage.setItem('ci-executor.token', t), TOKEN)
    page = await ctx.newPage()
    page.setDefaultTimeout(20_000)
    page.on('pageerror', (e) => pageErrors.push(String(e)))
  })

  after(async () => {
    // Never leave the gated step waiting, whatever happened above.
    try {
      if (go) writeFileSync(go, '')
      if (go) writeFileSync(join(go, '..', 'done'), '')
    } catch {
      // The build never got a workspace.
    }
    await browser?.close()
    await svc?.stop()
  })

  test('reconnects on the first attempt after the server is back, without duplicates or layout shift', async () => {
    // `tick` prints until the crash kills it (its pipe's reader dies with the service); the
    // restarted service marks that job `error` and runs `after`, which prints once released.
    const yaml = `jobs:
  tick:
    steps:
      - name: count
        run: |
          for i in $(seq 1 300); do echo "tick $i"; sleep 0.2; done
  after:
    needs: [tick]
    if: always()
    steps:
      - name: resume
        run: |
          echo "after started"
          for i in $(seq 1 600); do [ -e ../go ] && break; sleep 0.1; done
          for i in 1 2 3; do echo "after $i"; done
          for i in $(seq 1 600); do [ -e ../done ] && break; sleep 0.1; done
`
    const build = await svc.api('POST', '/builds', { pipeline_id: 'e2e-restart', workflow_yaml: yaml, triggered_by: 'robot' })
    // The step waits for this file (its workspace is <WORKSPACE_ROOT>/<build>/<job>).
    go = join(svc.tmp, 'ws', String(build.id), 'go')
    const streamPath = `/api/v1/builds/${build.id}/logs/stream`
    const buildPath = `/api/v1/builds/${build.id}`
    // Every stream connection attempt the page makes, and how it ended.
    const attempts = []
    const byRequest = new Map()
    page.on('request', (r) => {
      const path = new URL(r.url()).pathname
      if (path !== streamPath && path !== buildPath) return
      // `status`: the answer's status if one came; `failed`: the request (or, for a stream
      // that connected, its body) broke off.
      const a = { path, request: r, seenAt: Date.now(), status: null, failed: false }
      attempts.push(a)
      byRequest.set(r, a)
    })
    page.on('response', (res) => {
      const a = byRequest.get(res.request())
      if (a) a.status = res.status()
    })
    page.on('requestfailed', (r) => {
      const a = byRequest.get(r)
      if (a) a.failed = true
    })

    await page.goto(`${svc.baseUrl}/ci/builds/${build.id}?job=tick`)
    const log = page.getByRole('region', { name: /Log of step count output/ })
    await until(async () => (await log.innerText()).includes('tick 5'), { what: 'tick 5 live' })
    assert.equal((await connNote().innerText()).trim(), 'live')
    // Record every retry delay the page announces from now on.
    await page.evaluate(() => {
      window.__retryDelays = []
      const note = document.querySelector('.build-head .conn')
      new MutationObserver(() => {
        const v = note.getAttribute('data-retry-ms')
        if (v !== null) window.__retryDelays.push(Number(v))
      }).observe(note, { attributes: true, attributeFilter: ['data-retry-ms'] })
    })
    const before = await layout()

    await svc.kill()
    await until(async () => (await connNote().innerText()).trim() === 'reconnecting…', { what: '"reconnecting…"' })
    // Stay down until the page has also failed to re-read the build (its periodic refresh):
    // that is when an error banner used to push the whole page down.
    await until(() => attempts.some((a) => a.path === buildPath && a.failed && a.status === null), { timeoutMs: 30_000, what: 'a failed re-read of the build' })
    await until(() => attempts.filter((a) => a.path === streamPath && a.failed && a.status === null).length >= 2, { what: 'two failed stream attempts' })
    const during = await layout()
    assert.deepEqual(during, before, 'the page moved while the server was down')
    await page.screenshot({ path: join(ARTIFACTS, 'restart-reconnecting.png'), fullPage: true })
    const down = await axeViolations(page)
    assert.deepEqual(down, [], `axe while reconnecting: ${JSON.stringify(down)}`)
    const ticksShown = (await log.innerText()).split('\n').map((l) => l.trim()).filter((l) => /^tick \d+$/.test(l))

    const readyAt = await svc.restart()
    await until(async () => (await connNote().innerText()).trim() !== 'reconnecting…', { timeoutMs: 30_000, what: 'the stream to reconnect' })
    assert.notEqual((await connNote().innerText()).trim(), 'log stream failed')

    // The schedule: every announced delay is short (at most 2 s), so "reconnecting…" cannot
    // outlast the server's return by more than one such delay ...
    const delays = await page.evaluate(() => window.__retryDelays)
    assert.ok(delays.length >= 2, `retries announced: ${JSON.stringify(delays)}`)
    assert.ok(delays.every((d) => d > 0 && d <= 2000), `retry delays ${JSON.stringify(delays)}`)
    // ... and the first stream attempt that started after the server was ready reconnected:
    // the attempts are [connected, refused × n, connected], every refused one started before
    // the server was ready.
    const streams = attempts.filter((a) => a.path === streamPath)
    const startedAt = (a) => {
      const t = a.request.timing().startTime
      return t > 0 ? t : a.seenAt
    }
    const shape = streams.map((a) => (a.status === 200 ? 'connected' : a.failed && a.status === null ? 'refused' : `other:${a.status}`))
    assert.deepEqual(shape, ['connected', ...Array(shape.length - 2).fill('refused'), 'connected'], `stream attempts: ${shape}`)
    const refusedAfterReady = streams.filter((a) => a.status === null && startedAt(a) >= readyAt)
    assert.deepEqual(refusedAfterReady.map(startedAt), [], `attempts refused after the server was ready (at ${readyAt})`)

    // The restarted service takes the build over: `tick` ends in error, `after` runs. Its
    // output arrives on the resumed stream (released only now, after its step is on screen).
    await until(async () => (await svc.api('GET', `/builds/${build.id}`)).jobs.find((j) => j.name === 'after').status === 'running', { timeoutMs: 60_000, what: 'the after job running' })
    await page.locator('g.dag-node[data-job="after"]').click()
    const afterLog = page.getByRole('region', { name: /Log of step resume output/ })
    await until(async () => (await afterLog.innerText()).includes('after started'), { what: '"after started"' })
    assert.ok(!(await afterLog.innerText()).includes('after 1'))
    writeFileSync(go, '')
    await until(async () => (await afterLog.innerText()).includes('after 3'), { timeoutMs: 30_000, what: '"after 3" on the resumed stream' })
    const afterLines = (await afterLog.innerText()).split('\n').map((l) => l.trim()).filter((l) => /^after/.test(l))
    assert.deepEqual(afterLines, ['after started', 'after 1', 'after 2', 'after 3'])
    writeFileSync(join(go, '..', 'done'), '')
    await until(async () => (await svc.api('GET', `/builds/${build.id}`)).status !== 'running', { timeoutMs: 30_000, what: 'the build to finish' })
    await until(async () => (await connNote().innerText()).trim() === '', { what: 'the stream to end' })

    // The crashed step's log: what was stored, each line once, in order (nothing lost or
    // repeated across the reconnect), including what was shown before the crash.
    await page.locator('g.dag-node[data-job="tick"]').click()
    const stored = (await svc.api('GET', `/builds/${build.id}/logs?job=tick&step=0&limit=1000`)).items
      .flatMap((c) => c.content.split('\n'))
      .filter((l) => /^tick \d+$/.test(l))
    assert.ok(stored.length >= 5)
    assert.deepEqual(stored, Array.from({ length: stored.length }, (_, i) => `tick ${i + 1}`))
    await until(async () => (await log.innerText()).includes(stored.at(-1)), { what: 'the last stored tick' })
    const shown = (await log.innerText()).split('\n').map((l) => l.trim()).filter((l) => /^tick \d+$/.test(l))
    assert.deepEqual(shown, stored)
    assert.deepEqual(shown.slice(0, ticksShown.length), ticksShown)
    await page.screenshot({ path: join(ARTIFACTS, 'restart-resumed.png'), fullPage: true })
    const end = await axeViolations(page)
    assert.deepEqual(end, [], `axe after the restart: ${JSON.stringify(end)}`)
    assert.deepEqual(pageErrors, [])
  })
})
