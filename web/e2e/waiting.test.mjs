// End-to-end: a build waiting for its concurrency group and a matrix placeholder, in Debian's
// chromium against a real `ci-executor serve` (local runner). Steps that must keep a group busy
// wait at a fifo gate (`read < gate` blocks in the kernel); the test opens it to let them go.
import assert from 'node:assert/strict'
import { existsSync, mkdirSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { ARTIFACTS, TOKEN, axeViolations, launchBrowser, startService, until } from './harness.mjs'

const PIPELINE = 'e2e-concurrency'
const GATE = 'mkfifo gate && read -r _ < gate'

const HOLDER = `concurrency: deploy
jobs:
  deploy:
    steps:
      - run: ${GATE}
`

// Waits for the same group; then a matrix computed from the outputs of \`define\`.
const WAITER = `concurrency: deploy
jobs:
  define:
    outputs:
      colors: \${{ steps.c.outputs.colors }}
    steps:
      - run: ${GATE}
      - id: c
        run: echo 'colors=["red", "green"]' >> "$GITHUB_OUTPUT"
  paint:
    needs: define
    strategy:
      matrix:
        color: \${{ fromJSON(needs.define.outputs.colors) }}
    steps:
      - run: echo "painting \${{ matrix.color }}"
`

// A job-level group: the second build runs, but its job waits for the first build's job.
const JOB_GROUP = `jobs:
  ship:
    concurrency: release
    steps:
      - run: ${GATE}
`

let svc
let browser
let page
const pageErrors = []

/** The gate of a job (a plain job name is its directory name; see app/runners/local.py). */
const gate = (buildId, job) => join(svc.tmp, 'ws', String(buildId), job, 'gate')
async function release(buildId, job) {
  await until(() => existsSync(gate(buildId, job)), { what: `${job} of build ${buildId} at its gate` })
  // Opening a fifo for writing waits for its reader: the step is released once this resolves.
  await writeFile(gate(buildId, job), 'go\n')
}

async function check(name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
  const violations = await axeViolations(page)
  assert.deepEqual(violations, [], `axe on ${name}: ${JSON.stringify(violations, null, 1)}`)
}

const text = (sel) => page.locator(sel).innerText()

describe('concurrency and matrix placeholders', () => {
  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true })
    svc = await startService()
    const b = await launchBrowser()
    browser = b
    const context = await b.browser.newContext({ viewport: { width: 1366, height: 900 } })
    await context.addInitScript((t) => localStorage.setItem('ci-executor.token', t), TOKEN)
    page = await context.newPage()
    page.on('pageerror', (e) => pageErrors.push(String(e)))
  })

  after(async () => {
    await browser?.close()
    await svc?.stop()
  })

  test('a waiting build says why, then its placeholder matrix expands', async () => {
    const holder = await svc.api('POST', '/builds', { pipeline_id: PIPELINE, workflow_yaml: HOLDER, triggered_by: 'robot' })
    await until(() => existsSync(gate(holder.id, 'deploy')), { what: 'the holder at its gate' })
    const waiter = await svc.api('POST', '/builds', { pipeline_id: PIPELINE, workflow_yaml: WAITER, triggered_by: 'robot' })
    await until(async () => (await svc.api('GET', `/builds/${waiter.id}`)).waiting_reason, { what: 'the waiter marked waiting' })

    // The build page: the reason under the header, the group in the facts.
    await page.goto(`${svc.baseUrl}/ci/builds/${waiter.id}`)
    await page.locator('[data-testid="build-waiting"]').waitFor()
    assert.equal(await text('[data-testid="build-waiting"]'), `Waiting for concurrency group 'deploy': build #${holder.number} is running`)
    assert.equal(await text('[data-testid="build-group"]'), 'deploy')
    assert.equal(await page.locator('[data-testid="build-status"]').getAttribute('data-status'), 'queued')
    // The placeholder is drawn as one, not as an ordinary pending job.
    const paint = page.locator('.dag-node[data-job="paint"]')
    assert.match(await paint.getAttribute('class'), /\bplaceholder\b/)
    assert.match(await paint.textContent(), /matrix pending expansion/)
    assert.doesNotMatch(await page.locator('.dag-node[data-job="define"]').getAttribute('class'), /placeholder/)
    await check('waiting-build')

    // The list notes it too.
    await page.goto(`${svc.baseUrl}/ci?pipeline=${PIPELINE}`)
    const row = page.locator(`tr[data-build-id="${waiter.id}"]`)
    await row.waitFor()
    assert.match(await row.locator('[data-testid="list-waiting"]').innerText(), /^Waiting for concurrency group 'deploy'/)
    assert.equal(await page.locator(`tr[data-build-id="${holder.id}"] [data-testid="list-waiting"]`).count(), 0)
    await check('waiting-list')

    // The group frees: the note goes away live, the waiter runs and its placeholder is explained.
    await page.goto(`${svc.baseUrl}/ci/builds/${waiter.id}?job=paint`)
    await page.locator('[data-testid="build-waiting"]').waitFor()
    await release(holder.id, 'deploy')
    await page.locator('[data-testid="build-waiting"]').waitFor({ state: 'detached' })
    await until(() => existsSync(gate(waiter.id, 'define')), { what: 'define at its gate' })
    await page.locator('[data-testid="job-placeholder"]').waitFor()
    assert.equal(await text('[data-testid="job-placeholder"]'), 'matrix pending expansion')
    assert.match(await text('[data-testid="placeholder-note"]'), /computed from the outputs of define/)
    assert.match(await page.locator('#job-select option[value="paint"]').innerText(), /\(matrix pending expansion\)$/)
    await check('matrix-placeholder')

    // Its needs finish: the placeholder gives way to the combinations.
    await release(waiter.id, 'define')
    await page.locator('[data-testid="build-status"][data-status="success"]').waitFor({ timeout: 30_000 })
    await page.locator('.dag-node[data-job="paint (red)"]').waitFor()
    assert.equal(await page.locator('.dag-node[data-job="paint"]').count(), 0)
    assert.equal(await page.locator('.dag-node.placeholder').count(), 0)
    assert.equal(await page.locator('[data-testid="job-placeholder"]').count(), 0)
    // The placeholder was selected: its first combination is now.
    await until(async () => /^paint \((red|green)\)$/.test(await text('#job-title')), { what: 'a combination selected' })
    await check('matrix-expanded')
    assert.deepEqual(pageErrors, [])
  })

  test('a job waiting for its concurrency group says why in the graph and the job panel', async () => {
    const first = await svc.api('POST', '/builds', { pipeline_id: 'e2e-job-group', workflow_yaml: JOB_GROUP, triggered_by: 'robot' })
    await until(() => existsSync(gate(first.id, 'ship')), { what: 'the first ship at its gate' })
    const second = await svc.api('POST', '/builds', { pipeline_id: 'e2e-job-group', workflow_yaml: JOB_GROUP, triggered_by: 'robot' })
    await until(async () => (await svc.api('GET', `/builds/${second.id}`)).jobs[0].waiting_reason, { what: 'the second ship marked waiting' })

    await page.goto(`${svc.baseUrl}/ci/builds/${second.id}?job=ship`)
    await page.locator('[data-testid="job-waiting"]').waitFor()
    assert.equal(await text('[data-testid="job-waiting"]'), `Waiting for concurrency group 'release': job 'ship' of build #${first.number} is running`)
    const node = page.locator('.dag-node[data-job="ship"]')
    assert.match(await node.getAttribute('class'), /\bwaiting\b/)
    assert.match(await node.textContent(), /waiting · release/)
    // The build itself is not held back: no note under its header.
    assert.equal(await page.locator('[data-testid="build-waiting"]').count(), 0)
    await check('waiting-job')

    await release(first.id, 'ship')
    await page.locator('[data-testid="job-waiting"]').waitFor({ state: 'detached' })
    // The graph re-renders from the same live update a moment after the panel: wait for it.
    await until(async () => !/\bwaiting\b/.test(await node.getAttribute('class')), { what: 'the graph node no longer waiting' })
    await release(second.id, 'ship')
    await page.locator('[data-testid="build-status"][data-status="success"]').waitFor({ timeout: 30_000 })
    assert.deepEqual(pageErrors, [])
  })
})
