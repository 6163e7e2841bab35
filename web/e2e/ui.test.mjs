// End-to-end: the built UI in Debian's chromium against a real `ci-executor serve` (local runner).
// The tests run in order and share one service; each saves a screenshot to web/test-artifacts/
// and runs axe-core on the page (no serious or critical violations).
import assert from 'node:assert/strict'
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { ARTIFACTS, READ_TOKEN, TOKEN, axeViolations, horizontalOverflow, launchBrowser, startService, until } from './harness.mjs'

const PIPELINE = 'e2e-web'

const LIVE_AND_FAIL = `name: e2e
jobs:
  stream:
    name: Stream
    steps:
      - name: prepare
        run: echo "prepared"
      - name: count
        run: |
          echo "::group::Setup"
          echo "inside the group"
          echo "::endgroup::"
          printf '\\033[31mred text\\033[0m\\n'
          printf '\\033[38;5;208morange256\\033[0m \\033[38;2;10;200;120mtruecolour\\033[0m \\033[3;4mstyled\\033[0m\\n'
          printf '\\033[30;42mblack on green\\033[0m\\n'
          for i in $(seq 1 60); do echo line $i; sleep 0.1; done
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

const MATRIX = `jobs:
  build:
    name: Build
    strategy:
      matrix:
        os: [linux, mac]
        python: ['3.11', '3.12']
    steps:
      - run: echo "\${{ matrix.os }} \${{ matrix.python }}"
  report:
    needs: [build]
    steps:
      - run: echo done
`

let svc
let browser
let context
let page
const pageErrors = []

async function shot(name, p = page) {
  await p.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}

/** Screenshot, then axe-core: no serious or critical violations. */
async function check(name, p = page) {
  await shot(name, p)
  const violations = await axeViolations(p)
  assert.deepEqual(violations, [], `axe on ${name}: ${JSON.stringify(violations, null, 1)}`)
}

function buildIdFromUrl() {
  const m = /\/ci\/builds\/(\d+)/.exec(new URL(page.url()).pathname)
  return m ? Number(m[1]) : null
}

async function waitForStatus(id, statuses, timeoutMs = 60_000) {
  return until(async () => {
    const b = await svc.api('GET', `/builds/${id}`)
    return statuses.includes(b.status) ? b : null
  }, { timeoutMs, what: `build ${id} ${statuses.join('/')}` })
}

async function newPage(token, viewport = { width: 1366, height: 900 }) {
  const ctx = await browser.browser.newContext({ viewport, acceptDownloads: true })
  // Only before the first load: the token box may change it afterwards.
  if (token !== null) await ctx.addInitScript((t) => localStorage.getItem('ci-executor.token') ?? localStorage.setItem('ci-executor.token', t), token)
  const p = await ctx.newPage()
  p.setDefaultTimeout(20_000)
  p.on('pageerror', (e) => pageErrors.push(String(e)))
  return { ctx, p }
}

describe('ci-executor web UI', { timeout: 300_000 }, () => {
  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true })
    svc = await startService()
    browser = await launchBrowser()
    ;({ ctx: context, p: page } = await newPage(TOKEN))
  })

  after(async () => {
    await browser?.close()
    await svc?.stop()
  })

  let liveBuild = 0

  test('the run form shows YAML problems with line and column', async () => {
    await page.goto(`${svc.baseUrl}/`)
    await page.waitForURL(/\/ci$/)
    await page.getByRole('link', { name: 'Run a build' }).first().click()
    await page.waitForURL(/\/ci\/new/)
    await page.getByLabel('Pipeline id', { exact: true }).fill(PIPELINE)
    await page.getByLabel('Workflow YAML').fill('jobs:\n  a:\n    stepz: []\n')
    await page.getByRole('button', { name: 'Run', exact: true }).click()
    const alert = page.getByRole('alert')
    await alert.waitFor()
    assert.match(await alert.innerText(), /line 3, column \d+/)
    await check('run-form-yaml-error')
  })

  test('runs a build from the form and follows its live log, tail on screen', async () => {
    await page.getByLabel('Pipeline id', { exact: true }).fill(PIPELINE)
    await page.getByLabel('Branch').fill('main')
    await page.getByLabel('Workflow YAML').fill(LIVE_AND_FAIL)
    await page.getByLabel(/^Variables/).fill('GREETING=hi\nAPI_KEY=s3cret')
    await page.getByRole('button', { name: 'Run', exact: true }).click()
    await page.waitForURL(/\/ci\/builds\/\d+$/)
    liveBuild = buildIdFromUrl()
    assert.ok(liveBuild > 0)
    await page.getByRole('heading', { name: new RegExp(`^${PIPELINE}`) }).waitFor()

    const log = page.getByRole('region', { name: /Log of step count output/ })
    await until(async () => (await log.innerText()).includes('line 3'), { what: 'line 3 in the log' })
    // The tab names the build and its status.
    await until(async () => (await page.title()) === `Running · ${PIPELINE} #1 · ci-executor`, { what: `the tab title (${await page.title()})` })
    const stepStatus = page.locator('li.step[data-step="1"] .step-head .badge')
    assert.equal(await stepStatus.getAttribute('data-status'), 'running')
    assert.ok(!(await log.innerText()).includes('line 60'), 'the whole log arrived at once')
    // The finished first step folded by itself; the running one is open.
    assert.equal(await page.locator('li.step[data-step="0"] .step-head').getAttribute('aria-expanded'), 'false')
    assert.equal(await page.locator('li.step[data-step="1"] .step-head').getAttribute('aria-expanded'), 'true')
    await until(async () => (await log.innerText()).includes('line 40'), { what: 'line 40' })
    // The newest line is inside the window (not below the fold) while the step runs.
    const lastRow = log.locator('.log-row').last()
    const box = await lastRow.boundingBox()
    assert.ok(box && box.y + box.height <= 902 && box.y >= 0, `live tail off screen: ${JSON.stringify(box)}`)
    await check('build-detail-live')
    // A step that finished successfully folds by itself (the next running one gets the room);
    // pin the job and open the step again to read all of it.
    await until(async () => (await svc.api('GET', `/builds/${liveBuild}`)).jobs.find((j) => j.name === 'stream').steps[1].status === 'success', { timeoutMs: 30_000, what: 'count finished' })
    await page.locator('g.dag-node[data-job="stream"]').click()
    const head = page.locator('li.step[data-step="1"] .step-head')
    await until(async () => (await head.getAttribute('aria-expanded')) === 'false', { what: 'count folded' })
    await head.click()
    await until(async () => (await log.innerText()).includes('line 60'), { timeoutMs: 30_000, what: 'line 60' })
    const text = await log.innerText()
    const lines = text.split('\n').map((l) => l.trim()).filter((l) => /^line \d+$/.test(l))
    assert.deepEqual(lines, Array.from({ length: 60 }, (_, i) => `line ${i + 1}`))
    assert.ok(!text.includes('::group::') && !text.includes('##[ci-executor:'))
  })

  test('renders 256-colour, truecolour and styles with readable contrast', async () => {
    const log = page.getByRole('region', { name: /Log of step count output/ })
    // The first lines: rows out of view are not rendered (the log is virtualised).
    await log.evaluate((el) => {
      el.scrollTop = 0
    })
    await until(async () => (await log.locator('.ansi-fg-31', { hasText: 'red text' }).count()) === 1, { what: 'red text rendered' })
    const colour = (text) => log.locator('.txt span', { hasText: new RegExp(`^${text}$`) }).evaluate((el) => getComputedStyle(el).color)
    assert.equal(await colour('orange256'), 'rgb(255, 135, 0)')
    assert.equal(await colour('truecolour'), 'rgb(10, 200, 120)')
    const styled = log.locator('.txt span', { hasText: /^styled$/ })
    assert.equal(await styled.evaluate((el) => getComputedStyle(el).fontStyle), 'italic')
    assert.match(await styled.evaluate((el) => getComputedStyle(el).textDecorationLine), /underline/)
    // Black on green would be 1.1:1; the text is drawn light or dark enough to read.
    const bog = log.locator('.txt span', { hasText: /^black on green$/ })
    const [fg, bg] = await bog.evaluate((el) => [getComputedStyle(el).color, getComputedStyle(el).backgroundColor])
    const lum = (c) => {
      const [r, g, b] = c.match(/\d+/g).slice(0, 3).map((v) => Number(v) / 255).map((x) => (x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4))
      return 0.2126 * r + 0.7152 * g + 0.0722 * b
    }
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a)
    assert.ok((hi + 0.05) / (lo + 0.05) >= 4.5, `contrast ${fg} on ${bg}`)
  })

  test('the failed step opens by itself, red with its exit code; read-only variables stay masked', async () => {
    await waitForStatus(liveBuild, ['failed'])
    await page.locator('[data-testid="build-status"][data-status="failed"]').waitFor()
    const node = page.locator('g.dag-node[data-job="broken"]')
    await node.focus()
    await page.keyboard.press('Enter')
    await page.getByRole('heading', { name: 'broken', level: 2 }).waitFor()
    assert.match(page.url(), /job=broken/)
    // ... and keeps naming it, with the new status, when the selected job changes the URL.
    await until(async () => (await page.title()) === `Failed · ${PIPELINE} #1 · ci-executor`, { what: 'the finished build in the tab title' })
    const step = page.locator('li.step[data-step="0"]')
    await step.locator('.badge[data-status="failed"]').first().waitFor()
    assert.equal(await step.locator('.step-head').getAttribute('aria-expanded'), 'true')
    assert.equal((await step.getByTestId('exit-code').innerText()).trim(), 'exit 3')
    const log = page.getByRole('region', { name: /Log of step fails output/ })
    await until(async () => (await log.innerText()).includes('about to fail'), { what: 'failing step log' })
    await page.getByText('Variables (2)').click()
    assert.ok((await page.locator('.vars-table').innerText()).includes('***'))
    await check('build-detail-failed')
  })

  test('only expanded steps load their log, from the paged API', async () => {
    const requests = []
    page.on('request', (r) => {
      if (/\/logs(\?|\/)/.test(r.url())) requests.push(r.url())
    })
    await page.goto(`${svc.baseUrl}/ci/builds/${liveBuild}?job=stream`)
    await page.getByRole('heading', { name: 'Stream', level: 2 }).waitFor()
    // Finished and successful: both steps folded, no log fetched, no stream opened.
    assert.equal(await page.locator('li.step .step-head[aria-expanded="true"]').count(), 0)
    assert.deepEqual(requests, [])
    await page.locator('li.step[data-step="1"] .step-head').click()
    const log = page.getByRole('region', { name: /Log of step count output/ })
    await until(async () => (await log.innerText()).includes('line 60'), { what: 'count log' })
    assert.equal(requests.length, 1)
    assert.match(requests[0], /\/logs\?job=stream&step=1&offset=0&limit=1000$/)
  })

  test('a log that fails to load says so in its step, moves nothing else, and loads on "Try again"', async () => {
    await page.goto(`${svc.baseUrl}/ci/builds/${liveBuild}?job=stream`)
    const step = page.locator('li.step[data-step="0"]')
    const head = step.locator('.step-head')
    await until(async () => (await head.getAttribute('aria-expanded')) === 'false', { what: 'prepare folded' })
    const jobs = page.locator('section[aria-labelledby="dag-title"]')
    const jobsBox = await jobs.boundingBox()
    await page.route('**/api/v1/builds/*/logs?*', (route) => route.fulfill({ status: 500, contentType: 'application/json', body: '{"detail":"internal error; see the service log"}' }))
    try {
      await head.click()
      const alert = step.getByRole('alert')
      await alert.waitFor()
      assert.match(await alert.innerText(), /Could not load this log: internal error/)
      assert.equal(await page.locator('section.build-head [role="alert"]').count(), 0)
      assert.deepEqual(await jobs.boundingBox(), jobsBox)
      await check('build-detail-log-error')
    } finally {
      await page.unrouteAll()
    }
    await step.getByRole('button', { name: 'Try again' }).click()
    const log = page.getByRole('region', { name: /Log of step prepare output/ })
    await until(async () => (await log.innerText()).includes('prepared'), { what: 'the log after "Try again"' })
    assert.equal(await step.getByRole('alert').count(), 0)
  })

  test('deep links: a line URL scrolls to and highlights it; clicking line numbers updates the URL', async () => {
    await page.goto(`${svc.baseUrl}/ci/builds/${liveBuild}?job=stream&step=1&line=45`)
    const log = page.getByRole('region', { name: /Log of step count output/ })
    const selected = log.locator('.log-selected')
    await selected.first().waitFor()
    assert.equal(await selected.count(), 1)
    assert.equal(await selected.getAttribute('data-line'), '45')
    assert.ok(await selected.isVisible())
    const box = await selected.boundingBox()
    assert.ok(box.y > 0 && box.y < 900, 'the linked line is on screen')
    await log.getByRole('link', { name: 'Line 47', exact: true }).click()
    await until(() => new URL(page.url()).searchParams.get('line') === '47', { what: 'line=47 in the URL' })
    await log.getByRole('link', { name: 'Line 50', exact: true }).click({ modifiers: ['Shift'] })
    await until(() => new URL(page.url()).searchParams.get('line') === '47-50', { what: 'line=47-50 in the URL' })
    assert.equal(await log.locator('.log-selected').count(), 4)
    assert.equal(new URL(page.url()).searchParams.get('job'), 'stream')
    assert.equal(new URL(page.url()).searchParams.get('step'), '1')
    await check('build-detail-deep-link')
  })

  test('one search box for the whole job, with / to focus, match count and next/previous; timestamps toggle', async () => {
    await page.goto(`${svc.baseUrl}/ci/builds/${liveBuild}?job=stream`)
    await page.getByRole('heading', { name: 'Stream', level: 2 }).waitFor()
    await page.locator('body').click({ position: { x: 5, y: 300 } })
    await page.keyboard.press('/')
    const search = page.getByLabel(/Search the logs of Stream/)
    assert.equal(await search.evaluate((el) => el === document.activeElement), true)
    // "prepared" is in the first step, "line 1" (line 1, 10-19) in the second: one search covers both.
    await search.fill('prepared')
    await page.keyboard.press('Enter')
    const count = page.getByTestId('match-count')
    await until(async () => (await count.innerText()).trim() === '1 of 1', { what: 'one match' })
    const prep = page.getByRole('region', { name: /Log of step prepare output/ })
    await prep.locator('.log-current mark', { hasText: 'prepared' }).waitFor()
    await search.fill('line 1')
    await search.press('Enter')
    await until(async () => /^1 of 11$/.test((await count.innerText()).trim()), { what: '11 matches' })
    await search.press('Enter')
    await until(async () => (await count.innerText()).trim() === '2 of 11', { what: 'next match' })
    await page.getByRole('button', { name: 'Previous match' }).click()
    await until(async () => (await count.innerText()).trim() === '1 of 11', { what: 'previous match' })
    const log = page.getByRole('region', { name: /Log of step count output/ })
    assert.match(await log.locator('.log-current').innerText(), /line 1\b/)
    // Ctrl+F focuses the same box.
    await log.click()
    await page.keyboard.press('Control+f')
    assert.equal(await search.evaluate((el) => el === document.activeElement), true)
    // Timestamps
    assert.equal(await log.locator('.ts').count(), 0)
    await page.getByLabel('Timestamps').check()
    const ts = log.locator('.ts').first()
    await ts.waitFor()
    assert.match(await ts.innerText(), /^\d\d:\d\d:\d\d\.\d{3}$/)
    await check('build-detail-search')
    await page.getByLabel('Timestamps').uncheck()
  })

  test('downloads the build, job and step logs with the token, named after the build', async () => {
    await page.goto(`${svc.baseUrl}/ci/builds/${liveBuild}?job=stream`)
    const [whole] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download log' }).click()])
    assert.equal(whole.suggestedFilename(), `${PIPELINE}-1.log`)
    assert.match(readFileSync(await whole.path(), 'utf8'), /about to fail/)
    const [jobLog] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download job log' }).click()])
    assert.equal(jobLog.suggestedFilename(), `${PIPELINE}-1-stream.log`)
    const [stepLog] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download the log of step count' }).click()])
    assert.equal(stepLog.suggestedFilename(), `${PIPELINE}-1-stream-step1.log`)
    const text = readFileSync(await stepLog.path(), 'utf8')
    assert.match(text, /line 60/)
    assert.doesNotMatch(text, /about to fail/)
  })

  test('re-runs the failed jobs: the rest is reused, with its log', async () => {
    await page.goto(`${svc.baseUrl}/ci/builds/${liveBuild}`)
    await page.getByRole('button', { name: 'Re-run failed jobs' }).click()
    await until(() => buildIdFromUrl() !== liveBuild, { what: 'navigation to the re-run' })
    const rerun = buildIdFromUrl()
    await page.getByRole('link', { name: `build ${liveBuild}` }).first().waitFor()
    const detail = await waitForStatus(rerun, ['failed'])
    assert.equal(detail.jobs.find((j) => j.name === 'stream').reused_from, liveBuild)
    assert.equal(detail.jobs.find((j) => j.name === 'broken').reused_from, null)
    await page.locator('g.dag-node[data-job="stream"]').click()
    await page.getByTestId('reused').waitFor()
    await page.locator('li.step[data-step="1"] .step-head').click()
    const log = page.getByRole('region', { name: /Log of step count output/ })
    await until(async () => (await log.innerText()).includes('line 60'), { what: 'the reused log' })
    await check('build-detail-rerun')
  })

  let cancelled = 0

  test('cancels a running build and shows who did', async () => {
    const build = await svc.api('POST', '/builds', { pipeline_id: PIPELINE, workflow_yaml: SLOW, triggered_by: 'robot', branch: 'feature' })
    cancelled = build.id
    await page.goto(`${svc.baseUrl}/ci/builds/${cancelled}`)
    const log = page.getByRole('region', { name: /Log of step wait output/ })
    await until(async () => (await log.innerText()).includes('started'), { what: 'slow step started' })
    await page.getByRole('button', { name: 'Cancel', exact: true }).click()
    await page.locator('[data-testid="build-status"][data-status="cancelled"]').waitFor({ timeout: 30_000 })
    await until(async () => (await page.getByTestId('cancelled-by').count()) === 1, { what: 'cancelled by' })
    assert.equal(await page.getByTestId('cancelled-by').innerText(), 'e2e')
    assert.equal(await page.getByRole('button', { name: 'Cancel', exact: true }).count(), 0)
    await check('build-detail-cancelled')
  })

  test('re-runs one job from its panel', async () => {
    await page.getByRole('button', { name: 'Re-run this job' }).click()
    await until(() => buildIdFromUrl() !== cancelled, { what: 'navigation to the re-run' })
    const retry = await svc.api('GET', `/builds/${buildIdFromUrl()}`)
    assert.equal(retry.retry_of, cancelled)
    assert.equal(retry.triggered_by, 'e2e')
    await page.locator('[data-testid="build-status"][data-status="running"]').waitFor({ timeout: 30_000 })
    await svc.api('POST', `/builds/${retry.id}/cancel`)
  })

  test('matrix jobs read like GitHub and are grouped in the graph', async () => {
    const build = await svc.api('POST', '/builds', { pipeline_id: 'e2e-matrix', workflow_yaml: MATRIX, triggered_by: 'robot' })
    await waitForStatus(build.id, ['success'])
    await page.goto(`${svc.baseUrl}/ci/builds/${build.id}`)
    const node = page.getByRole('button', { name: /^Build \(linux, 3\.11\) success/ })
    await node.waitFor()
    for (const name of ['Build (linux, 3.12)', 'Build (mac, 3.11)', 'Build (mac, 3.12)']) {
      assert.equal(await page.getByRole('button', { name: new RegExp(`^${name.replace(/[()]/g, '\\$&')}`) }).count(), 1)
    }
    const group = page.locator('rect.dag-group')
    assert.equal(await group.count(), 1)
    assert.equal(await group.getAttribute('data-count'), '4')
    await node.click()
    await page.getByRole('heading', { name: 'Build (linux, 3.11)', level: 2 }).waitFor()
    const options = await page.locator('#job-select option').allInnerTexts()
    assert.ok(options.includes('Build (mac, 3.12) (success)'), options.join(', '))
    await check('build-detail-matrix')
  })

  test('all builds: filters in the URL (Back undoes them), relative times, past-the-end pages', async () => {
    await page.goto(`${svc.baseUrl}/ci`)
    const rows = page.locator('table.builds tbody tr[data-build-id]')
    await until(async () => (await rows.count()) >= 5, { what: 'builds listed' })
    const all = await rows.count()
    const pipelines = await rows.locator('td:nth-child(3)').allInnerTexts()
    assert.ok(pipelines.includes('e2e-matrix') && pipelines.includes(PIPELINE))
    const started = rows.first().locator('time')
    assert.match(await started.innerText(), /ago|just now/)
    assert.match(await started.getAttribute('title'), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/)
    await check('build-list')

    await page.getByLabel('Pipeline').selectOption(PIPELINE)
    await until(() => page.url().includes(`pipeline=${PIPELINE}`), { what: 'pipeline in the URL' })
    await until(async () => (await rows.count()) < all, { what: 'filtered by pipeline' })
    await page.getByLabel('Actor').selectOption('robot')
    await until(async () => (await rows.count()) === 1, { what: 'filtered by actor' })
    assert.match(page.url(), /actor=robot/)
    await page.getByLabel('Status').selectOption('cancelled')
    await until(async () => (await rows.count()) === 1, { what: 'cancelled robot builds' })
    await page.getByLabel('Branch').selectOption('main')
    await until(async () => (await page.getByText('No builds match these filters').count()) === 1, { what: 'empty result' })
    await page.goBack()
    await until(async () => (await rows.count()) === 1 && !page.url().includes('branch='), { what: 'Back undid the branch filter' })
    await page.goBack()
    await page.goBack()
    await until(() => !page.url().includes('actor='), { what: 'Back undid the actor filter' })
    assert.equal(await page.getByLabel('Actor').inputValue(), '')

    await page.goto(`${svc.baseUrl}/ci?page=99`)
    const info = page.getByRole('status').filter({ hasText: 'past the end' })
    await info.waitFor()
    await info.getByRole('link', { name: 'Go to the last page' }).click()
    await until(async () => (await rows.count()) > 0, { what: 'last page' })
    assert.doesNotMatch(await page.locator('main').innerText(), /No builds yet/)
  })

  test('the list follows running builds without a reload', async () => {
    const build = await svc.api('POST', '/builds', { pipeline_id: 'e2e-live-list', workflow_yaml: SLOW, triggered_by: 'robot' })
    await page.goto(`${svc.baseUrl}/ci?pipeline=e2e-live-list`)
    const badge = page.locator(`tr[data-build-id="${build.id}"] .badge`)
    await until(async () => (await badge.getAttribute('data-status')) === 'running', { what: 'running in the list' })
    await svc.api('POST', `/builds/${build.id}/cancel`)
    await until(async () => (await badge.getAttribute('data-status')) === 'cancelled', { timeoutMs: 30_000, what: 'cancelled in the list' })
  })

  test('a failing list shows the error, not "No builds yet"', async () => {
    await page.route('**/api/v1/builds?*', (route) => route.fulfill({ status: 500, contentType: 'application/json', body: '{"detail":"internal error; see the service log"}' }))
    try {
      await page.goto(`${svc.baseUrl}/ci`)
      const alert = page.getByRole('alert')
      await alert.waitFor()
      assert.match(await alert.innerText(), /Could not load builds: internal error/)
      assert.equal(await page.getByText('No builds yet').count(), 0)
      await check('build-list-error')
    } finally {
      await page.unrouteAll()
    }
  })

  test('a failed refresh keeps the list on screen and says so; the next good one clears that', async () => {
    await page.goto(`${svc.baseUrl}/ci`)
    const rows = page.locator('table.builds tbody tr[data-build-id]')
    await until(async () => (await rows.count()) > 0, { what: 'builds listed' })
    const n = await rows.count()
    const table = page.locator('table.builds')
    const tableBox = await table.boundingBox()
    await page.route('**/api/v1/builds?*', (route) => route.fulfill({ status: 500, contentType: 'application/json', body: '{"detail":"internal error; see the service log"}' }))
    const note = page.getByTestId('list-stale')
    try {
      // The page's next poll (every 10 s while nothing runs) fails.
      await note.waitFor({ timeout: 30_000 })
      assert.match(await note.innerText(), /not refreshed \(internal error/)
      assert.equal(await rows.count(), n)
      assert.equal(await page.getByRole('alert').count(), 0)
      assert.deepEqual(await table.boundingBox(), tableBox)
      await check('build-list-stale')
    } finally {
      await page.unrouteAll()
    }
    await note.waitFor({ state: 'detached', timeout: 30_000 })
    assert.equal(await rows.count(), n)
  })

  test('error pages: a bad or unknown build id is a friendly "not found" with a way back', async () => {
    await page.goto(`${svc.baseUrl}/ci/builds/abc`)
    await page.getByRole('heading', { name: 'Build not found' }).waitFor()
    await check('not-found-bad-id')
    await page.goto(`${svc.baseUrl}/ci/builds/987654`)
    await page.getByRole('heading', { name: 'Build not found' }).waitFor()
    assert.doesNotMatch(await page.locator('main').innerText(), /detail|validation|int_parsing/)
    await page.getByRole('link', { name: 'Back to all builds' }).click()
    await page.waitForURL(/\/ci$/)
  })

  test('read-only tokens see no Cancel or Re-run; a wrong token says so; the token box behaves', async () => {
    const { ctx, p } = await newPage(READ_TOKEN)
    try {
      await p.goto(`${svc.baseUrl}/ci/builds/${liveBuild}`)
      await p.getByRole('heading', { name: new RegExp(`^${PIPELINE}`) }).waitFor()
      await p.getByTestId('token-button').filter({ hasText: 'viewer (read-only)' }).waitFor()
      assert.equal(await p.getByRole('button', { name: /Re-run|Cancel/ }).count(), 0)
      assert.equal(await p.getByRole('link', { name: 'Run a build' }).count(), 0)
      // The token box: focus moves in, Esc closes it and returns focus, an outside click too.
      await p.getByTestId('token-button').click()
      assert.equal(await p.locator('#token-input').evaluate((el) => el === document.activeElement), true)
      await p.keyboard.press('Escape')
      assert.equal(await p.locator('#token-form').count(), 0)
      assert.equal(await p.getByTestId('token-button').evaluate((el) => el === document.activeElement), true)
      await p.getByTestId('token-button').click()
      await p.locator('h1').click()
      assert.equal(await p.locator('#token-form').count(), 0)
      await p.getByTestId('token-button').click()
      await p.locator('#token-input').fill('not-a-token')
      await p.getByRole('button', { name: 'Save' }).click()
      await p.getByTestId('token-button').filter({ hasText: 'Token rejected' }).waitFor()
      await check('token-rejected', p)
    } finally {
      await ctx.close()
    }
  })

  test('no horizontal overflow at 390 px, and no axe violations there', async () => {
    const { ctx, p } = await newPage(TOKEN, { width: 390, height: 844 })
    try {
      for (const [name, path] of [
        ['list', '/ci'],
        ['detail', `/ci/builds/${liveBuild}?job=stream&step=1&line=3`],
        ['run', '/ci/new'],
      ]) {
        await p.goto(`${svc.baseUrl}${path}`)
        await p.locator('h1').first().waitFor()
        await p.waitForLoadState('networkidle').catch(() => undefined)
        assert.equal(await horizontalOverflow(p), 0, `${name} overflows at 390 px`)
        if (name === 'list') {
          // Every build's facts are on screen, none behind a sideways scroll of the table.
          const cells = p.locator('table.builds tr[data-build-id] td')
          assert.ok((await cells.count()) >= 8)
          for (const box of await cells.evaluateAll((els) => els.map((el) => el.getBoundingClientRect().toJSON()))) {
            assert.ok(box.x >= 0 && box.x + box.width <= 390, `a list cell is off screen at 390 px: ${JSON.stringify(box)}`)
          }
          // Each fact is labelled (the table head is hidden): "Started 10s ago".
          const label = await p.locator('table.builds tr[data-build-id] td[data-label="Started"]').first().evaluate((el) => getComputedStyle(el, '::before').content)
          assert.match(label, /Started/)
        }
        await check(`mobile-${name}`, p)
      }
    } finally {
      await ctx.close()
    }
  })

  test('virtualises a 100k-line log and searches it', async () => {
    const yaml = 'jobs:\n  big:\n    steps:\n      - name: lots\n        run: seq 1 100000\n'
    const build = await svc.api('POST', '/builds', { pipeline_id: 'e2e-big', workflow_yaml: yaml })
    await waitForStatus(build.id, ['success'])
    await page.goto(`${svc.baseUrl}/ci/builds/${build.id}`)
    await page.locator('li.step[data-step="0"] .step-head').click()
    const viewport = page.getByRole('region', { name: 'Log of step lots output, 100000 lines' })
    await viewport.waitFor({ timeout: 30_000 })
    const rows = viewport.locator('.log-row')
    assert.ok((await rows.count()) < 150, `rendered ${await rows.count()} rows`)
    const search = page.getByLabel(/Search the logs of big/)
    await search.fill('77777')
    await search.press('Enter')
    const current = viewport.locator('.log-current')
    await current.waitFor()
    assert.equal(await current.getAttribute('data-line'), '77777')
    assert.equal(await current.locator('mark').innerText(), '77777')
    assert.ok((await rows.count()) < 150)
    await shot('build-detail-100k-search')
  })

  test('GitHub Actions output: annotations and sanitised step summaries from a real build', async () => {
    // A step that writes an ::error:: annotation and a hostile $GITHUB_STEP_SUMMARY, then fails.
    const yaml = [
      'jobs:',
      '  broken:',
      '    steps:',
      '      - name: fails',
      '        run: |',
      '          echo "about to fail"',
      '          echo "::error file=tests/test_x.py,line=12,title=pytest::tests failed"',
      "          printf '## Test report\\n\\n| suite | result |\\n|---|---|\\n| unit | 3 failed |\\n\\n' >> \"$GITHUB_STEP_SUMMARY\"",
      '          echo \'<img src="x" onerror="window.__pwned = 1"><script>window.__pwned = 2</script>\' >> "$GITHUB_STEP_SUMMARY"',
      '          exit 1',
      '',
    ].join('\n')
    const build = await svc.api('POST', '/builds', { pipeline_id: PIPELINE, workflow_yaml: yaml, triggered_by: 'robot' })
    await until(async () => (await svc.api('GET', `/builds/${build.id}`)).status === 'failed', { timeoutMs: 30_000, what: 'the annotated build to fail' })
    await page.goto(`${svc.baseUrl}/ci/builds/${build.id}?job=broken`)
    const list = page.getByRole('region', { name: /Annotations/ })
    await list.waitFor()
    assert.match(await list.innerText(), /error[\s\S]*broken[\s\S]*tests\/test_x\.py:12[\s\S]*pytest[\s\S]*tests failed/i)
    await list.getByRole('button', { name: 'broken' }).click()
    await page.getByRole('heading', { name: 'broken', level: 2 }).waitFor()
    // As on GitHub, the annotation leads to the log line that made it.
    await until(() => /[?&]line=2(&|$)/.test(page.url()), { what: `the annotation's line in the URL (${page.url()})` })
    await page.locator('.log-row.log-selected[data-line="2"]').waitFor()
    const summary = page.locator('.summary[data-step="0"]')
    await summary.getByRole('heading', { name: 'Test report' }).waitFor()
    assert.equal(await summary.locator('td', { hasText: '3 failed' }).count(), 1)
    const log = page.getByRole('region', { name: /Log of step fails output/ })
    await until(async () => (await log.innerText()).includes('about to fail'), { what: 'the annotated step\'s log' })
    // The workflow command reads as GitHub shows it in the log: "Error: …", in the error colour.
    const cmdRow = log.locator('.log-row.log-cmd-error')
    assert.equal(await cmdRow.locator('.txt').innerText(), 'Error: tests failed')
    assert.doesNotMatch(await log.innerText(), /::error/)
    const [fg, bg] = await cmdRow.locator('.txt').evaluate((el) => [getComputedStyle(el).color, getComputedStyle(el.parentElement).backgroundColor])
    assert.notEqual(fg, await log.locator('.log-row:not(.log-cmd) .txt').first().evaluate((el) => getComputedStyle(el).color), `error line colour ${fg} on ${bg}`)
    assert.equal(await summary.locator('script').count(), 0)
    assert.equal(await summary.locator('[onerror]').count(), 0)
    assert.equal(await page.evaluate(() => window.__pwned), undefined)
    await check('build-detail-gha-output')
  })

  test('no script errors on any page', () => {
    assert.deepEqual(pageErrors, [])
  })
})
