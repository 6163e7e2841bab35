// End-to-end: the built UI in Debian's chromium against a real `ci-executor serve` (local runner).
// The tests run in order and share one service; each saves a screenshot to web/test-artifacts/.
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { ARTIFACTS, TOKEN, launchBrowser, startService, until } from './harness.mjs'

const PIPELINE = 'e2e-web'

const LIVE_AND_FAIL = `name: e2e
jobs:
  stream:
    name: Stream
    steps:
      - name: count
        run: |
          echo "::group::Setup"
          echo "inside the group"
          echo "::endgroup::"
          printf '\\033[31mred text\\033[0m\\n'
          for i in $(seq 1 30); do echo line $i; sleep 0.2; done
  broken:
    needs: [stream]
    steps:
      - name: fails
        run: |
          echo "about to fail"
          exit 3
`

const SLOW = `jobs:
  slow:
    steps:
      - name: wait
        run: |
          echo started
          sleep 120
`

let svc
let browser
let page
const pageErrors = []

async function shot(name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}

function buildIdFromUrl() {
  const m = /\/ci\/builds\/(\d+)$/.exec(new URL(page.url()).pathname)
  return m ? Number(m[1]) : null
}

describe('ci-executor web UI', { timeout: 240_000 }, () => {
  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true })
    svc = await startService()
    browser = await launchBrowser()
    const context = await browser.browser.newContext({ viewport: { width: 1280, height: 900 } })
    // The service runs with API_TOKENS set, so every call (SSE included) needs the bearer token.
    await context.addInitScript((token) => localStorage.setItem('ci-executor.token', token), TOKEN)
    page = await context.newPage()
    page.setDefaultTimeout(20_000)
    page.on('pageerror', (e) => pageErrors.push(String(e)))
  })

  after(async () => {
    await browser?.close()
    await svc?.stop()
  })

  let liveBuild = 0

  test('shows YAML problems with line and column on the run form', async () => {
    await page.goto(`${svc.baseUrl}/`)
    await page.waitForURL(/\/ci$/)
    await page.getByLabel('Pipeline id', { exact: true }).last().fill(PIPELINE)
    await page.getByLabel('Workflow YAML').fill('jobs:\n  a:\n    stepz: []\n')
    await page.getByRole('button', { name: 'Run', exact: true }).click()
    const alert = page.getByRole('alert')
    await alert.waitFor()
    assert.match(await alert.innerText(), /line 3, column \d+/)
    await shot('run-form-yaml-error')
  })

  test('runs a build from the form and lands on its page', async () => {
    await page.goto(`${svc.baseUrl}/ci`)
    await page.getByLabel('Pipeline id', { exact: true }).last().fill(PIPELINE)
    await page.getByLabel('Branch').fill('main')
    await page.getByLabel('Workflow YAML').fill(LIVE_AND_FAIL)
    await page.getByLabel(/^Variables/).fill('GREETING=hi\nAPI_KEY=s3cret')
    await shot('run-form')
    await page.getByRole('button', { name: 'Run', exact: true }).click()
    await page.waitForURL(/\/ci\/builds\/\d+$/)
    liveBuild = buildIdFromUrl()
    assert.ok(liveBuild > 0)
    await page.getByRole('heading', { name: new RegExp(`^${PIPELINE}`) }).waitFor()
    const build = await svc.api('GET', `/builds/${liveBuild}`)
    assert.equal(build.branch, 'main')
    assert.equal(build.variables.GREETING, 'hi')
  })

  test('shows live log lines while the step runs', async () => {
    // Pin the job: left alone, the page follows the build on to the next running job.
    await page.locator('g.dag-node[data-job="stream"]').click()
    const log = page.getByRole('region', { name: /Log of step count output/ })
    await log.waitFor()
    const stepStatus = page.locator('li.step[data-step="0"] .step-head .badge')
    // A line arrives while the step is still running: it is live, not a replay at the end.
    await until(async () => (await log.innerText()).includes('line 3'), { what: 'line 3 in the log' })
    assert.equal(await stepStatus.getAttribute('data-status'), 'running')
    assert.ok(!(await log.innerText()).includes('line 30'), 'the whole log arrived at once')
    await shot('build-detail-live')
    await until(async () => (await log.innerText()).includes('line 30'), { timeoutMs: 30_000, what: 'line 30' })
    const text = await log.innerText()
    // Each line once, in order, with the group folded in and ANSI colours rendered as spans.
    const lines = text.split('\n').filter((l) => /^line \d+$/.test(l.trim()))
    assert.deepEqual(lines.map((l) => l.trim()), Array.from({ length: 30 }, (_, i) => `line ${i + 1}`))
    assert.equal(await log.locator('.ansi-fg-31', { hasText: 'red text' }).count(), 1)
    assert.ok(!text.includes('::group::') && !text.includes('::endgroup::') && !text.includes('##[ci-executor:'))
    // 34 rows do not fit the viewer: it followed the tail to the bottom while lines arrived.
    const viewport = log
    const atBottom = () => viewport.evaluate((el) => el.scrollTop > 0 && el.scrollTop + el.clientHeight >= el.scrollHeight - 1)
    assert.equal(await atBottom(), true)
    await viewport.evaluate((el) => {
      el.scrollTop = 0
    })
    await page.getByRole('button', { name: 'Follow tail' }).first().waitFor()
    await log.getByRole('button', { name: /Setup/ }).click()
    await until(async () => !(await log.innerText()).includes('inside the group'), { what: 'group folded' })
  })

  test('shows the failing step in red with its exit code', async () => {
    await until(async () => (await svc.api('GET', `/builds/${liveBuild}`)).status === 'failed', { timeoutMs: 30_000, what: 'build failed' })
    await page.locator('[data-testid="build-status"][data-status="failed"]').waitFor()
    const node = page.locator('g.dag-node[data-job="broken"]')
    await node.focus()
    await page.keyboard.press('Enter')
    await page.getByRole('heading', { name: 'broken', level: 2 }).waitFor()
    const step = page.locator('li.step[data-step="0"]')
    await step.locator('.badge[data-status="failed"]').waitFor()
    const exit = step.getByTestId('exit-code')
    assert.equal((await exit.innerText()).trim(), 'exit 3')
    assert.equal(await exit.evaluate((el) => getComputedStyle(el).color), 'rgb(248, 81, 73)')
    assert.equal(await step.locator('.badge').first().evaluate((el) => getComputedStyle(el).color), 'rgb(248, 81, 73)')
    const log = page.getByRole('region', { name: /Log of step fails output/ })
    await until(async () => (await log.innerText()).includes('about to fail'), { what: 'failing step log' })
    // Masked variables stay masked on the page.
    assert.ok((await page.locator('.vars-table').innerText()).includes('***'))
    await shot('build-detail-failed')
  })

  test('resumes a dropped log stream with Last-Event-ID, without gaps or repeats', async () => {
    const requests = []
    await page.route('**/api/v1/builds/*/logs/stream*', async (route) => {
      const req = route.request()
      requests.push({ url: req.url(), lastEventId: req.headers()['last-event-id'], auth: req.headers().authorization })
      if (requests.length > 1) return route.continue()
      // The first connection drops after three chunks, before the end event.
      const res = await route.fetch()
      const events = (await res.text()).split(/\r?\n\r?\n/).filter((e) => /^event: log$/m.test(e))
      assert.ok(events.length > 5, `only ${events.length} chunks to replay`)
      await route.fulfill({ status: 200, headers: { 'Content-Type': 'text/event-stream' }, body: `${events.slice(0, 3).join('\n\n')}\n\n` })
    })
    try {
      await page.goto(`${svc.baseUrl}/ci/builds/${liveBuild}`)
      await page.locator('g.dag-node[data-job="stream"]').click()
      await page.getByRole('button', { name: /count/ }).click()
      const log = page.getByRole('region', { name: /Log of step count output/ })
      await until(async () => (await log.innerText()).includes('line 30'), { what: 'the whole log after the reconnect' })
      assert.equal(requests.length, 2)
      assert.equal(requests[0].lastEventId, undefined)
      assert.equal(requests[1].lastEventId, '3')
      assert.match(requests[1].url, /offset=3/)
      assert.ok(requests.every((r) => r.auth === `Bearer ${TOKEN}`))
      const lines = (await log.innerText()).split('\n').map((l) => l.trim()).filter((l) => /^line \d+$/.test(l))
      assert.deepEqual(lines, Array.from({ length: 30 }, (_, i) => `line ${i + 1}`))
    } finally {
      await page.unrouteAll()
    }
  })

  let cancelled = 0

  test('cancels a running build from the detail page', async () => {
    const build = await svc.api('POST', '/builds', { pipeline_id: PIPELINE, workflow_yaml: SLOW, triggered_by: 'e2e' })
    cancelled = build.id
    await page.goto(`${svc.baseUrl}/ci/builds/${cancelled}`)
    const log = page.getByRole('region', { name: /Log of step wait output/ })
    await until(async () => (await log.innerText()).includes('started'), { what: 'slow step started' })
    const cancel = page.getByRole('button', { name: 'Cancel', exact: true })
    assert.equal(await cancel.isEnabled(), true)
    await cancel.click()
    await page.locator('[data-testid="build-status"][data-status="cancelled"]').waitFor({ timeout: 30_000 })
    await until(async () => !(await page.getByRole('button', { name: 'Cancel', exact: true }).isEnabled()), { what: 'Cancel disabled' })
    assert.equal((await svc.api('GET', `/builds/${cancelled}`)).status, 'cancelled')
    await shot('build-detail-cancelled')
  })

  test('retries a finished build and opens the new one', async () => {
    await page.getByRole('button', { name: 'Retry', exact: true }).click()
    await until(() => buildIdFromUrl() !== cancelled, { what: 'navigation to the retry' })
    const retryId = buildIdFromUrl()
    assert.ok(retryId > cancelled)
    await page.getByRole('link', { name: `build ${cancelled}` }).waitFor()
    const retry = await svc.api('GET', `/builds/${retryId}`)
    assert.equal(retry.retry_of, cancelled)
    await page.locator('[data-testid="build-status"][data-status="running"]').waitFor({ timeout: 30_000 })
    await shot('build-detail-retry')
    await svc.api('POST', `/builds/${retryId}/cancel`)
  })

  test('lists the builds of the pipeline with status text and filter', async () => {
    await page.goto(`${svc.baseUrl}/ci/pipelines/${PIPELINE}/builds`)
    const rows = page.locator('table.builds tbody tr[data-build-id]')
    await until(async () => (await rows.count()) === 3, { what: 'three builds listed' })
    const first = await rows.first().innerText()
    assert.match(first, /#3/)
    const cells = await rows.last().locator('td').allInnerTexts()
    assert.deepEqual(cells.slice(0, 3).map((c) => c.replace(/\s+/g, ' ').trim()), ['#1', '✗ failed', 'main'])
    assert.equal(cells[4].trim(), 'web')
    await shot('build-list')
    await page.getByLabel('Status').selectOption('failed')
    await until(async () => (await rows.count()) === 1, { what: 'filtered to failed builds' })
    assert.match(page.url(), /status=failed/)
    await rows.first().getByRole('link').click()
    await page.waitForURL(new RegExp(`/ci/builds/${liveBuild}$`))
  })

  test('virtualises a 100k-line log and searches it', async () => {
    const yaml = 'jobs:\n  big:\n    steps:\n      - name: lots\n        run: seq 1 100000\n'
    const build = await svc.api('POST', '/builds', { pipeline_id: 'e2e-big', workflow_yaml: yaml })
    await until(async () => (await svc.api('GET', `/builds/${build.id}`)).status === 'success', { timeoutMs: 60_000, what: 'big build' })
    await page.goto(`${svc.baseUrl}/ci/builds/${build.id}`)
    await page.getByRole('button', { name: /lots/ }).click()
    const viewport = page.getByRole('region', { name: 'Log of step lots output, 100000 lines' })
    await viewport.waitFor({ timeout: 30_000 })
    // Only the rows in view (plus overscan) are in the DOM.
    const rows = viewport.locator('.log-row')
    assert.ok((await rows.count()) < 120, `rendered ${await rows.count()} rows`)
    await viewport.evaluate((el) => {
      el.scrollTop = el.scrollHeight
    })
    await until(async () => (await viewport.innerText()).includes('100000'), { what: 'last line rendered' })
    const search = page.getByLabel('Search Log of step lots')
    await search.fill('77777')
    await search.press('Enter')
    const current = viewport.locator('.log-current')
    await current.waitFor()
    assert.equal(await current.getAttribute('data-line'), '77777')
    assert.equal(await current.locator('mark').innerText(), '77777')
    assert.ok((await rows.count()) < 120)
    await shot('build-detail-100k-search')
  })

  test('no script errors on any page', () => {
    assert.deepEqual(pageErrors, [])
  })
})
