// Typed client for the ci-executor builds API (DESIGN.md section 5).
import { runEventStream } from '../../lib/sse'
import type {
  Build,
  BuildDetail,
  BuildFacets,
  BuildPage,
  BuildStatus,
  CreateBuildRequest,
  EndEvent,
  LogChunk,
  LogPage,
  LogStreamEvents,
  RetryRequest,
  StatusEvent,
  ValidationProblem,
  WhoAmI,
  YamlProblem,
} from './types'

export type * from './types'

/** A non-2xx answer. `detail` is the body's `detail` field (a string or a list of problems). */
export class ApiError extends Error {
  constructor(
    public readonly status: number,
    public readonly detail: unknown,
  ) {
    super(describeDetail(status, detail))
    this.name = 'ApiError'
  }

  /** YAML problems (line/column) from a 422 answer to CreateBuild. */
  get yamlProblems(): YamlProblem[] {
    if (!Array.isArray(this.detail)) return []
    return this.detail.filter(
      (p): p is YamlProblem =>
        typeof p === 'object' && p !== null && typeof p.line === 'number' && typeof p.message === 'string',
    )
  }

  /** FastAPI body-validation problems from a 422 answer. */
  get validationProblems(): ValidationProblem[] {
    if (!Array.isArray(this.detail)) return []
    return this.detail.filter(
      (p): p is ValidationProblem =>
        typeof p === 'object' && p !== null && Array.isArray(p.loc) && typeof p.msg === 'string',
    )
  }
}

function describeDetail(status: number, detail: unknown): string {
  if (typeof detail === 'string' && detail) return detail
  if (Array.isArray(detail) && detail.length > 0) {
    return detail
      .map((p: Record<string, unknown>) => {
        if (typeof p.line === 'number') return `line ${p.line}, column ${String(p.column)}: ${String(p.message)}`
        if (Array.isArray(p.loc)) return `${p.loc.join('.')}: ${String(p.msg)}`
        return JSON.stringify(p)
      })
      .join('; ')
  }
  return `request failed with status ${status}`
}

export interface ListParams {
  pipeline_id?: string
  status?: BuildStatus | ''
  branch?: string
  triggered_by?: string
  page?: number
  size?: number
}

export interface LogParams {
  offset?: number
  limit?: number
  job?: string
  step?: number
}

export interface StreamHandlers {
  onLog?: (chunk: LogChunk) => void
  onStatus?: (event: StatusEvent) => void
  onEnd?: (event: EndEvent) => void
  /** The connection dropped and was opened again; statuses may have changed meanwhile. */
  onReconnect?: () => void
  /** The connection dropped; the stream will retry after delayMs. */
  onDrop?: (error: unknown, delayMs: number) => void
}

export interface StreamOptions {
  /** Start after this seq (0 replays the whole log). */
  offset?: number
  initialRetryMs?: number
  maxRetryMs?: number
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
}

export interface LogStream {
  close(): void
  /** Settles when the build ended (`end` event), the stream was closed, or it failed for good. */
  readonly done: Promise<void>
  /** The highest log seq delivered so far. */
  readonly lastSeq: number
}

type Query = Record<string, string | number | boolean | null | undefined>

function queryString(q: Query): string {
  const params = new URLSearchParams()
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined || v === null || v === '') continue
    params.set(k, String(v))
  }
  const s = params.toString()
  return s ? `?${s}` : ''
}

export class BuildsClient {
  readonly baseUrl: string
  private readonly fetchImpl: typeof fetch

  constructor(
    baseUrl: string,
    private readonly token: string | null = null,
    options: { fetch?: typeof fetch } = {},
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '')
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis)
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { Accept: 'application/json', ...extra }
    if (this.token) h.Authorization = `Bearer ${this.token}`
    return h
  }

  url(path: string, query: Query = {}): string {
    return `${this.baseUrl}${path}${queryString(query)}`
  }

  private async request<T>(method: string, path: string, opts: { query?: Query; body?: unknown; headers?: Record<string, string> } = {}): Promise<T> {
    const headers = this.headers(opts.headers)
    let body: string | undefined
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json'
      body = JSON.stringify(opts.body)
    }
    const res = await this.fetchImpl(this.url(path, opts.query), { method, headers, body })
    const text = await res.text()
    let json: unknown = undefined
    if (text) {
      try {
        json = JSON.parse(text)
      } catch {
        json = undefined
      }
    }
    if (!res.ok) {
      const detail = typeof json === 'object' && json !== null && 'detail' in json ? (json as { detail: unknown }).detail : text
      throw new ApiError(res.status, detail)
    }
    return json as T
  }

  /** ListBuilds: newest first. */
  list(params: ListParams = {}): Promise<BuildPage> {
    return this.request('GET', '/builds', { query: { ...params } })
  }

  /** GetBuild: the build with its jobs, steps and edges. */
  get(id: number): Promise<BuildDetail> {
    return this.request('GET', `/builds/${id}`)
  }

  /** CreateBuild. A 422 rejects with an ApiError whose yamlProblems name line and column. */
  create(body: CreateBuildRequest, opts: { idempotencyKey?: string } = {}): Promise<BuildDetail> {
    const headers: Record<string, string> = {}
    if (opts.idempotencyKey) headers['Idempotency-Key'] = opts.idempotencyKey
    return this.request('POST', '/builds', { body, headers })
  }

  /** CancelBuild: 202 with the detail; a finished build rejects with 409. */
  cancel(id: number): Promise<BuildDetail> {
    return this.request('POST', `/builds/${id}/cancel`)
  }

  /** Retry: a new build from the same snapshot; with `failed_only` or `jobs` only those jobs
   * (and what needs them) run again and the rest keep their results. */
  retry(id: number, body?: RetryRequest): Promise<BuildDetail> {
    return this.request('POST', `/builds/${id}/retry`, { body })
  }

  /** Who the token belongs to and whether it may write (cancel, retry, run). */
  whoami(): Promise<WhoAmI> {
    return this.request('GET', '/whoami')
  }

  /** Pipelines, branches and actors of recent builds, for the list's filters. */
  facets(): Promise<BuildFacets> {
    return this.request('GET', '/build-facets')
  }

  /** GetBuildLogs: chunks with seq > offset. */
  logs(id: number, params: LogParams = {}): Promise<LogPage> {
    return this.request('GET', `/builds/${id}/logs`, { query: { ...params } })
  }

  /** The raw log's URL (plain text), for links. */
  rawUrl(id: number, params: { job?: string; step?: number; download?: boolean } = {}): string {
    return this.url(`/builds/${id}/logs/raw`, { ...params, download: params.download ? 'true' : undefined })
  }

  /** The raw log as a Blob and the file name the server gives it (sends the token). */
  async rawFile(id: number, params: { job?: string; step?: number } = {}): Promise<{ blob: Blob; filename: string }> {
    const res = await this.fetchImpl(this.rawUrl(id, { ...params, download: true }), { headers: this.headers({ Accept: 'text/plain' }) })
    if (!res.ok) throw new ApiError(res.status, await res.text())
    const disposition = res.headers.get('Content-Disposition') ?? ''
    const m = /filename="([^"]+)"/.exec(disposition)
    return { blob: await res.blob(), filename: m?.[1] ?? `build-${id}.log` }
  }

  /** The raw log as text (sends the token, which a plain link cannot). */
  async raw(id: number, params: { job?: string; step?: number } = {}): Promise<string> {
    const res = await this.fetchImpl(this.rawUrl(id, params), { headers: this.headers({ Accept: 'text/plain' }) })
    const text = await res.text()
    if (!res.ok) throw new ApiError(res.status, text)
    return text
  }

  /**
   * StreamBuildLogs over SSE with the bearer token. Reconnects after a drop with Last-Event-ID;
   * each chunk is delivered once and in seq order: repeats are dropped and a hole in the seqs is
   * filled from GET /logs before the chunk after it.
   */
  stream(id: number, handlers: StreamHandlers, opts: StreamOptions = {}): LogStream {
    const controller = new AbortController()
    let lastSeq = opts.offset ?? 0
    const deliver = async (chunk: LogChunk): Promise<void> => {
      if (chunk.seq <= lastSeq) return
      if (chunk.seq > lastSeq + 1) {
        try {
          const page = await this.logs(id, { offset: lastSeq, limit: chunk.seq - lastSeq - 1 })
          for (const missing of page.items) {
            if (missing.seq > lastSeq && missing.seq < chunk.seq) {
              lastSeq = missing.seq
              handlers.onLog?.(missing)
            }
          }
        } catch {
          // Showing what arrived beats stalling the live log on a failed back-fill.
        }
      }
      lastSeq = chunk.seq
      handlers.onLog?.(chunk)
    }
    const done = runEventStream({
      url: () => this.url(`/builds/${id}/logs/stream`, { offset: lastSeq || undefined }),
      // Resume from what was delivered, not from the parser's last id, so a chunk dropped as a
      // repeat can never move the resume point backwards.
      headers: () => {
        const h = this.headers({ Accept: 'text/event-stream' })
        if (lastSeq > 0) h['Last-Event-ID'] = String(lastSeq)
        return h
      },
      fetch: this.fetchImpl,
      signal: controller.signal,
      initialRetryMs: opts.initialRetryMs,
      maxRetryMs: opts.maxRetryMs,
      sleep: opts.sleep,
      onOpen: (attempt) => {
        if (attempt > 0) handlers.onReconnect?.()
      },
      onRetry: (err, delay) => handlers.onDrop?.(err, delay),
      onMessage: async (msg) => {
        if (msg.event === 'log') {
          await deliver(parseEvent('log', msg.data))
        } else if (msg.event === 'status') {
          handlers.onStatus?.(parseEvent('status', msg.data))
        } else if (msg.event === 'end') {
          handlers.onEnd?.(parseEvent('end', msg.data))
          return 'stop'
        }
      },
    })
    return {
      close: () => controller.abort(),
      done,
      get lastSeq() {
        return lastSeq
      },
    }
  }
}

/** An SSE event's JSON data, typed by its event name from the OpenAPI LogStreamEvents schema.
 * The server is the one writer of these payloads (app/logs/events.py), so they are trusted. */
export function parseEvent<K extends keyof LogStreamEvents>(_event: K, data: string): LogStreamEvents[K] {
  const parsed: LogStreamEvents[K] = JSON.parse(data)
  return parsed
}

export function isFinished(status: Build['status']): boolean {
  return status !== 'queued' && status !== 'running'
}
