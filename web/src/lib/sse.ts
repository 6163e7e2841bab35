// A fetch-based Server-Sent Events reader. EventSource cannot send an Authorization header, so the
// build page reads the stream with fetch, parses it here, and reconnects with Last-Event-ID itself.

export interface SSEMessage {
  event: string
  data: string
  /** The stream's last event id when this message was dispatched (per the SSE spec it persists). */
  id: string | null
}

/** Incremental parser for the `text/event-stream` format (WHATWG HTML, "server-sent events"). */
export class SSEParser {
  private buffer = ''
  private data: string[] = []
  private eventType = ''
  /** The reconnection time the server asked for with a `retry:` field, if any. */
  retry: number | null = null

  constructor(public lastEventId: string | null = null) {}

  /** Feed decoded text; returns the messages completed by it. */
  feed(text: string): SSEMessage[] {
    this.buffer += text
    const out: SSEMessage[] = []
    let start = 0
    for (;;) {
      let end = -1
      let next = -1
      for (let i = start; i < this.buffer.length; i++) {
        const c = this.buffer.charCodeAt(i)
        if (c === 10) {
          end = i
          next = i + 1
          break
        }
        if (c === 13) {
          // A CR at the very end may be the first half of a CRLF split across reads: wait.
          if (i + 1 >= this.buffer.length) break
          end = i
          next = this.buffer.charCodeAt(i + 1) === 10 ? i + 2 : i + 1
          break
        }
      }
      if (end < 0) break
      const msg = this.line(this.buffer.slice(start, end))
      if (msg) out.push(msg)
      start = next
    }
    this.buffer = this.buffer.slice(start)
    return out
  }

  private line(line: string): SSEMessage | null {
    if (line === '') {
      if (this.data.length === 0) {
        this.eventType = ''
        return null
      }
      const msg = { event: this.eventType || 'message', data: this.data.join('\n'), id: this.lastEventId }
      this.data = []
      this.eventType = ''
      return msg
    }
    if (line.startsWith(':')) return null
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    switch (field) {
      case 'data':
        this.data.push(value)
        break
      case 'event':
        this.eventType = value
        break
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value
        break
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value)
        break
    }
    return null
  }
}

export class HttpError extends Error {
  constructor(
    public readonly status: number,
    message: string,
  ) {
    super(message)
    this.name = 'HttpError'
  }
}

/** What a message handler can ask of the reader: keep reading, or stop for good. */
export type MessageVerdict = void | 'stop'

export interface EventStreamOptions {
  /** The URL to open; gets the last event id seen so far (null on the first connection). */
  url: (lastEventId: string | null) => string
  headers?: () => Record<string, string>
  fetch?: typeof fetch
  signal?: AbortSignal
  lastEventId?: string | null
  onMessage: (msg: SSEMessage) => MessageVerdict | Promise<MessageVerdict>
  /** Called after each successful (re)connection; attempt 0 is the first one. */
  onOpen?: (attempt: number) => void
  /** Called when a connection drops or fails and the reader will try again. */
  onRetry?: (error: unknown, delayMs: number) => void
  initialRetryMs?: number
  maxRetryMs?: number
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
}

function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms)
    function done(): void {
      clearTimeout(t)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}

/** 4xx answers other than timeouts and rate limits will not get better by retrying. */
function isFatal(status: number): boolean {
  return status >= 400 && status < 500 && status !== 408 && status !== 429
}

/**
 * Read an event stream until a handler says 'stop', the signal aborts, or the server refuses for
 * good (the promise then rejects with HttpError). Dropped connections are reopened with the
 * `Last-Event-ID` header, backing off up to maxRetryMs.
 */
export async function runEventStream(opts: EventStreamOptions): Promise<void> {
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis)
  const sleep = opts.sleep ?? defaultSleep
  const initialRetry = opts.initialRetryMs ?? 500
  const maxRetry = opts.maxRetryMs ?? 10_000
  let lastEventId = opts.lastEventId ?? null
  let delay = initialRetry
  let serverRetry: number | null = null
  let attempt = 0

  while (!opts.signal?.aborted) {
    const controller = new AbortController()
    const abort = (): void => controller.abort()
    opts.signal?.addEventListener('abort', abort, { once: true })
    let failure: unknown = new Error('stream closed')
    try {
      const headers: Record<string, string> = { Accept: 'text/event-stream', ...(opts.headers?.() ?? {}) }
      if (lastEventId !== null && !('Last-Event-ID' in headers)) headers['Last-Event-ID'] = lastEventId
      const res = await doFetch(opts.url(lastEventId), {
        headers,
        signal: controller.signal,
        cache: 'no-store',
      })
      if (!res.ok) {
        const err = new HttpError(res.status, `stream answered ${res.status}`)
        if (isFatal(res.status)) throw err
        failure = err
      } else if (!res.body) {
        failure = new Error('stream has no body')
      } else {
        opts.onOpen?.(attempt)
        const parser = new SSEParser(lastEventId)
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
        let stop = false
        while (!stop) {
          const { value, done } = await reader.read()
          if (done) break
          for (const msg of parser.feed(value)) {
            lastEventId = msg.id
            // Data arrived: the connection works, so the next drop starts backing off afresh.
            delay = initialRetry
            if ((await opts.onMessage(msg)) === 'stop') {
              stop = true
              break
            }
          }
        }
        serverRetry = parser.retry ?? serverRetry
        if (stop) {
          controller.abort()
          return
        }
      }
    } catch (err) {
      if (err instanceof HttpError && isFatal(err.status)) throw err
      failure = err
    } finally {
      opts.signal?.removeEventListener('abort', abort)
    }
    if (opts.signal?.aborted) return
    const wait = Math.min(serverRetry ?? delay, maxRetry)
    opts.onRetry?.(failure, wait)
    await sleep(wait, opts.signal)
    delay = Math.min(delay * 2, maxRetry)
    attempt++
  }
}
