import { describe, expect, it } from 'vitest'
import { ApiError, BuildsClient, type LogChunk, type StatusEvent } from './builds'
import { json, logEvent, noSleep, scriptedFetch, sse } from '../../test/fakes'

const detail = { id: 5, pipeline_id: 'p', number: 2, status: 'queued', jobs: [], edges: [] }

describe('BuildsClient requests', () => {
  it('lists with query parameters and the bearer token, skipping empty filters', async () => {
    const { fetch, calls } = scriptedFetch([json(200, { items: [], total: 0, page: 2, size: 20 })])
    const c = new BuildsClient('/ci_service/api/v1/', 'tok', { fetch })
    const page = await c.list({ pipeline_id: 'web app', status: '', page: 2, size: 20 })
    expect(page.page).toBe(2)
    expect(calls[0]!.url).toBe('/ci_service/api/v1/builds?pipeline_id=web+app&page=2&size=20')
    expect(calls[0]!.headers.authorization).toBe('Bearer tok')
    expect(calls[0]!.method).toBe('GET')
  })

  it('sends no Authorization header without a token', async () => {
    const { fetch, calls } = scriptedFetch([json(200, detail)])
    await new BuildsClient('/api/v1', null, { fetch }).get(5)
    expect(calls[0]!.url).toBe('/api/v1/builds/5')
    expect(calls[0]!.headers.authorization).toBeUndefined()
  })

  it('creates with a JSON body and an idempotency key', async () => {
    const { fetch, calls } = scriptedFetch([json(201, detail)])
    const c = new BuildsClient('/api/v1', null, { fetch })
    const b = await c.create({ pipeline_id: 'p', workflow_yaml: 'jobs: {}', variables: { A: '1' } }, { idempotencyKey: 'k1' })
    expect(b.id).toBe(5)
    expect(calls[0]!.method).toBe('POST')
    expect(calls[0]!.headers['content-type']).toBe('application/json')
    expect(calls[0]!.headers['idempotency-key']).toBe('k1')
    expect(JSON.parse(calls[0]!.body!)).toEqual({ pipeline_id: 'p', workflow_yaml: 'jobs: {}', variables: { A: '1' } })
  })

  it('turns a YAML 422 into problems with line and column', async () => {
    const problems = [
      { line: 3, column: 5, message: "unknown key 'stepz'" },
      { line: 9, column: 1, message: 'needs names unknown job x' },
    ]
    const { fetch } = scriptedFetch([json(422, { detail: problems })])
    const err = await new BuildsClient('/api/v1', null, { fetch }).create({ pipeline_id: 'p' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ApiError)
    const api = err as ApiError
    expect(api.status).toBe(422)
    expect(api.yamlProblems).toEqual(problems)
    expect(api.validationProblems).toEqual([])
    expect(api.message).toContain('line 3, column 5')
  })

  it('keeps FastAPI body-validation problems apart', async () => {
    const detailList = [{ loc: ['body', 'pipeline_id'], msg: 'Field required', type: 'missing' }]
    const { fetch } = scriptedFetch([json(422, { detail: detailList })])
    const err = (await new BuildsClient('/api/v1', null, { fetch }).create({ pipeline_id: '' }).catch((e: unknown) => e)) as ApiError
    expect(err.validationProblems).toEqual(detailList)
    expect(err.yamlProblems).toEqual([])
    expect(err.message).toBe('body.pipeline_id: Field required')
  })

  it('cancel of a finished build rejects with 409 and its text', async () => {
    const { fetch, calls } = scriptedFetch([json(409, { detail: 'build 5 is already finished' })])
    const err = (await new BuildsClient('/api/v1', null, { fetch }).cancel(5).catch((e: unknown) => e)) as ApiError
    expect(calls[0]!.url).toBe('/api/v1/builds/5/cancel')
    expect(calls[0]!.method).toBe('POST')
    expect(err.status).toBe(409)
    expect(err.message).toBe('build 5 is already finished')
  })

  it('retries, pages logs and builds the raw URL', async () => {
    const { fetch, calls } = scriptedFetch([json(201, { ...detail, id: 6, retry_of: 5 }), json(200, { items: [], next_offset: 10, complete: true })])
    const c = new BuildsClient('/api/v1', null, { fetch })
    expect((await c.retry(5)).id).toBe(6)
    expect((await c.logs(5, { offset: 10, limit: 100, job: 'build', step: 0 })).complete).toBe(true)
    expect(calls[1]!.url).toBe('/api/v1/builds/5/logs?offset=10&limit=100&job=build&step=0')
    expect(c.rawUrl(5, { job: 'test (3.12)' })).toBe('/api/v1/builds/5/logs/raw?job=test+%283.12%29')
  })

  it('raw() fetches text with the token', async () => {
    const { fetch, calls } = scriptedFetch([new Response('hello\n', { status: 200 })])
    const text = await new BuildsClient('/api/v1', 't', { fetch }).raw(1, { job: 'a', step: 1 })
    expect(text).toBe('hello\n')
    expect(calls[0]!.headers.authorization).toBe('Bearer t')
  })
})

describe('BuildsClient.stream', () => {
  it('resumes after a drop with Last-Event-ID and delivers every chunk once, in order', async () => {
    const status: StatusEvent = { kind: 'step', build_id: 5, job_name: 'build', step_index: 0, status: 'running', exit_code: null }
    const { fetch, calls } = scriptedFetch([
      sse([logEvent(1, 'a\n'), `event: status\ndata: ${JSON.stringify(status)}\n\n`, logEvent(2, 'b\n')]),
      // The server replays from its own idea of the offset: seq 2 again must be dropped.
      sse([logEvent(2, 'b\n'), logEvent(3, 'c\n')]),
      sse([': ping\n\n', logEvent(4, 'd\n'), 'event: end\ndata: {"status": "success"}\n\n']),
    ])
    const chunks: LogChunk[] = []
    const statuses: StatusEvent[] = []
    let end = ''
    let reconnects = 0
    const s = new BuildsClient('/api/v1', 'tok', { fetch }).stream(
      5,
      {
        onLog: (c) => chunks.push(c),
        onStatus: (e) => statuses.push(e),
        onEnd: (e) => (end = e.status),
        onReconnect: () => reconnects++,
      },
      { sleep: noSleep },
    )
    await s.done
    expect(chunks.map((c) => c.seq)).toEqual([1, 2, 3, 4])
    expect(chunks.map((c) => c.content).join('')).toBe('a\nb\nc\nd\n')
    expect(statuses).toEqual([status])
    expect(end).toBe('success')
    expect(reconnects).toBe(2)
    expect(s.lastSeq).toBe(4)
    expect(calls.map((c) => c.headers['last-event-id'])).toEqual([undefined, '2', '3'])
    expect(calls[0]!.url).toBe('/api/v1/builds/5/logs/stream')
    expect(calls[2]!.url).toBe('/api/v1/builds/5/logs/stream?offset=3')
    expect(calls.every((c) => c.headers.authorization === 'Bearer tok')).toBe(true)
  })

  it('fills a hole in the seqs from GET /logs before going on', async () => {
    const { fetch, calls } = scriptedFetch([
      sse([logEvent(1, '1\n'), logEvent(4, '4\n'), 'event: end\ndata: {"status": "failed"}\n\n']),
      json(200, {
        items: [
          { seq: 2, job_name: 'build', step_index: 0, content: '2\n', created_at: 'x' },
          { seq: 3, job_name: 'build', step_index: 0, content: '3\n', created_at: 'x' },
        ],
        next_offset: 3,
        complete: false,
      }),
    ])
    const seqs: number[] = []
    await new BuildsClient('/api/v1', null, { fetch }).stream(9, { onLog: (c) => seqs.push(c.seq) }, { sleep: noSleep }).done
    expect(seqs).toEqual([1, 2, 3, 4])
    expect(calls[1]!.url).toBe('/api/v1/builds/9/logs?offset=1&limit=2')
  })

  it('starts from an offset', async () => {
    const { fetch, calls } = scriptedFetch([sse([logEvent(11, 'x\n'), 'event: end\ndata: {"status": "success"}\n\n'])])
    const seqs: number[] = []
    await new BuildsClient('/api/v1', null, { fetch }).stream(3, { onLog: (c) => seqs.push(c.seq) }, { offset: 10, sleep: noSleep }).done
    expect(seqs).toEqual([11])
    expect(calls[0]!.url).toBe('/api/v1/builds/3/logs/stream?offset=10')
    expect(calls[0]!.headers['last-event-id']).toBe('10')
  })

  it('close() ends a stream that is waiting to reconnect', async () => {
    const { fetch, calls } = scriptedFetch([sse([logEvent(1, 'a\n')]), sse([])])
    let release: () => void = () => {}
    const waiting = new Promise<void>((r) => (release = r))
    const s = new BuildsClient('/api/v1', null, { fetch }).stream(1, { onDrop: () => release() }, {
      sleep: (_ms, signal) => new Promise((resolve) => signal?.addEventListener('abort', () => resolve(), { once: true })),
    })
    await waiting
    s.close()
    await s.done
    expect(calls).toHaveLength(1)
  })
})
