import { describe, expect, it } from 'vitest'
import { HttpError, SSEParser, runEventStream, type SSEMessage } from './sse'
import { json, noSleep, scriptedFetch, sse } from '../test/fakes'

describe('SSEParser', () => {
  it('parses events with id, type and multi-line data', () => {
    const p = new SSEParser()
    const out = p.feed('id: 7\nevent: log\ndata: a\ndata: b\n\n')
    expect(out).toEqual([{ event: 'log', data: 'a\nb', id: '7' }])
  })

  it('keeps state across feeds split anywhere, including inside CRLF', () => {
    const p = new SSEParser()
    const text = 'event: status\r\ndata: {"x":1}\r\n\r\n: ping\r\n\r\ndata: two\r\n\r\n'
    const out: SSEMessage[] = []
    for (const ch of text) out.push(...p.feed(ch))
    expect(out).toEqual([
      { event: 'status', data: '{"x":1}', id: null },
      { event: 'message', data: 'two', id: null },
    ])
  })

  it('ignores comments and empty events, and keeps the last id for later events', () => {
    const p = new SSEParser()
    const out = p.feed(': keep-alive\n\nid: 3\ndata: x\n\nevent: end\ndata: {}\n\n')
    expect(out).toEqual([
      { event: 'message', data: 'x', id: '3' },
      { event: 'end', data: '{}', id: '3' },
    ])
  })

  it('reads retry and only strips one leading space', () => {
    const p = new SSEParser()
    const out = p.feed('retry: 2500\ndata:  two spaces\ndata\n\n')
    expect(p.retry).toBe(2500)
    expect(out[0]!.data).toBe(' two spaces\n')
  })

  it('does not dispatch an unterminated event', () => {
    const p = new SSEParser()
    expect(p.feed('data: half')).toEqual([])
    expect(p.feed('\n\n')).toEqual([{ event: 'message', data: 'half', id: null }])
  })
})

describe('runEventStream', () => {
  it('reconnects after a drop with Last-Event-ID and custom headers', async () => {
    const { fetch, calls } = scriptedFetch([
      sse(['id: 1\ndata: a\n\n', 'id: 2\ndata: b\n\n']),
      sse(['id: 3\ndata: c\n\n', 'event: end\ndata: {}\n\n']),
    ])
    const seen: string[] = []
    const opened: number[] = []
    await runEventStream({
      url: (id) => `/s?after=${id ?? ''}`,
      headers: () => ({ Authorization: 'Bearer t' }),
      fetch,
      sleep: noSleep,
      onOpen: (a) => opened.push(a),
      onMessage: (m) => {
        seen.push(m.data)
        return m.event === 'end' ? 'stop' : undefined
      },
    })
    expect(seen).toEqual(['a', 'b', 'c', '{}'])
    expect(opened).toEqual([0, 1])
    expect(calls).toHaveLength(2)
    expect(calls[0]!.headers['last-event-id']).toBeUndefined()
    expect(calls[1]!.headers['last-event-id']).toBe('2')
    expect(calls[1]!.url).toBe('/s?after=2')
    expect(calls[1]!.headers.authorization).toBe('Bearer t')
  })

  it('retries network errors and server errors, backing off', async () => {
    const waits: number[] = []
    const { fetch } = scriptedFetch([
      () => {
        throw new TypeError('connection refused')
      },
      json(503, { detail: 'busy' }),
      sse(['event: end\ndata: {}\n\n']),
    ])
    let ended = false
    await runEventStream({
      url: () => '/s',
      fetch,
      initialRetryMs: 100,
      sleep: async (ms) => {
        waits.push(ms)
      },
      onMessage: (m) => {
        ended = m.event === 'end'
        return ended ? 'stop' : undefined
      },
    })
    expect(ended).toBe(true)
    expect(waits).toEqual([100, 200])
  })

  it('gives up on a 404 with an HttpError', async () => {
    const { fetch, calls } = scriptedFetch([json(404, { detail: 'no such build' })])
    await expect(runEventStream({ url: () => '/s', fetch, sleep: noSleep, onMessage: () => undefined })).rejects.toBeInstanceOf(HttpError)
    expect(calls).toHaveLength(1)
  })

  it('stops when aborted', async () => {
    const controller = new AbortController()
    const { fetch, calls } = scriptedFetch([sse(['data: a\n\n']), sse([]), sse([])])
    await runEventStream({
      url: () => '/s',
      fetch,
      signal: controller.signal,
      sleep: async () => controller.abort(),
      onMessage: () => undefined,
    })
    expect(calls).toHaveLength(1)
  })
})
