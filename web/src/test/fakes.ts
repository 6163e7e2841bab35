// Test doubles for fetch: scripted answers, and a record of what was asked.

export interface Call {
  url: string
  method: string
  headers: Record<string, string>
  body: string | undefined
}

export type Answer = Response | ((call: Call) => Response | Promise<Response>)

/** A fetch that answers from a queue and records every call. */
export function scriptedFetch(answers: Answer[]): { fetch: typeof fetch; calls: Call[] } {
  const calls: Call[] = []
  const fetchImpl = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const headers: Record<string, string> = {}
    new Headers(init.headers).forEach((v, k) => (headers[k] = v))
    const call: Call = { url: String(input), method: init.method ?? 'GET', headers, body: init.body as string | undefined }
    calls.push(call)
    const next = answers.shift()
    if (!next) throw new TypeError('network error: no more scripted answers')
    return typeof next === 'function' ? next(call) : next
  }
  return { fetch: fetchImpl as typeof fetch, calls }
}

export function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })
}

/** An event-stream response whose body is the given pieces, then closes (a dropped connection). */
export function sse(pieces: string[]): Response {
  const enc = new TextEncoder()
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const p of pieces) controller.enqueue(enc.encode(p))
      controller.close()
    },
  })
  return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } })
}

export function logEvent(seq: number, content: string, job = 'build', step = 0): string {
  const chunk = { seq, job_name: job, step_index: step, content, created_at: '2026-01-01T00:00:00Z' }
  return `id: ${seq}\nevent: log\ndata: ${JSON.stringify(chunk)}\n\n`
}

export const noSleep = async (): Promise<void> => {}
