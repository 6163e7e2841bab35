// Small display helpers shared by the pages.

export function shortSha(sha: string | null | undefined): string {
  return sha ? sha.slice(0, 7) : ''
}

/** "850ms", "12s", "3m 05s", "2h 04m". */
export function formatDuration(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms) || ms < 0) return ''
  if (ms < 1000) return `${Math.round(ms)}ms`
  const total = Math.floor(ms / 1000)
  const h = Math.floor(total / 3600)
  const m = Math.floor((total % 3600) / 60)
  const s = total % 60
  if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`
  if (m > 0) return `${m}m ${String(s).padStart(2, '0')}s`
  return `${s}s`
}

/** Milliseconds from start to end (or to `now` while still running); null before the start. */
export function elapsed(start: string | null, end: string | null, now: number = Date.now()): number | null {
  if (!start) return null
  const a = Date.parse(start)
  const b = end ? Date.parse(end) : now
  if (Number.isNaN(a) || Number.isNaN(b)) return null
  return Math.max(0, b - a)
}

export function formatTime(iso: string | null): string {
  if (!iso) return ''
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return iso
  // ISO-like and in local time: compact, sortable and unambiguous in any locale.
  const p = (n: number): string => String(n).padStart(2, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
}

export interface ParsedVariables {
  variables: Record<string, string>
  errors: string[]
}

/** `KEY=value` lines (blank lines and `#` comments skipped); the value may contain `=`. */
export function parseVariables(text: string): ParsedVariables {
  const variables: Record<string, string> = {}
  const errors: string[] = []
  text.split(/\r?\n/).forEach((line, i) => {
    const trimmed = line.trim()
    if (!trimmed || trimmed.startsWith('#')) return
    const eq = line.indexOf('=')
    const key = eq < 0 ? '' : line.slice(0, eq).trim()
    if (eq < 0 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      errors.push(`line ${i + 1}: expected KEY=value with a name of letters, digits and _`)
      return
    }
    variables[key] = line.slice(eq + 1)
  })
  return { variables, errors }
}

export const ACTIVE_STATUSES: ReadonlySet<string> = new Set(['queued', 'running', 'pending'])
export const BUILD_STATUSES = ['queued', 'running', 'success', 'failed', 'cancelled', 'timed_out', 'error'] as const

export function statusLabel(status: string): string {
  return status.replace(/_/g, ' ')
}

/** "just now", "42s ago", "5 min ago", "3 h ago", "2 days ago"; older: the date. */
export function relativeTime(iso: string | null, now: number = Date.now()): string {
  if (!iso) return ''
  const t = Date.parse(iso)
  if (Number.isNaN(t)) return iso
  const s = Math.round((now - t) / 1000)
  if (s < 5) return 'just now'
  if (s < 60) return `${s}s ago`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m} min ago`
  const h = Math.floor(m / 60)
  if (h < 24) return `${h} h ago`
  const d = Math.floor(h / 24)
  if (d < 30) return `${d} ${d === 1 ? 'day' : 'days'} ago`
  return formatTime(iso).slice(0, 10)
}

/**
 * A job's name as GitHub shows it: a matrix job keeps its `name:` and adds the matrix values,
 * `Build (linux, 3.11)`. The service names matrix jobs `<id> (<values>)` and keeps the plain
 * `name:` as display_name, so the values come from the job name.
 */
export function jobTitle(job: { name: string; display_name?: string | null }): string {
  const display = job.display_name || job.name
  const m = /^(.*?) (\(.*\))$/.exec(job.name)
  if (!m || display === job.name || display.endsWith(m[2]!)) return display
  return `${display} ${m[2]}`
}

/** The matrix group a job belongs to (its id without the matrix values), or null. */
export function matrixGroup(name: string): string | null {
  const m = /^(.*?) \(.*\)$/.exec(name)
  return m ? m[1]! : null
}

interface Waitable {
  status: string
  waiting_reason?: string | null
  concurrency_group?: string | null
}

/**
 * Why a queued build or a pending job has not started, as a sentence ("Waiting for concurrency
 * group 'deploy': build #1 is running"), as GitHub notes "Waiting for … to complete". Null once
 * it runs or finished, or when nothing holds it back.
 */
export function waitingNote(x: Waitable): string | null {
  if (x.status !== 'queued' && x.status !== 'pending') return null
  const reason = x.waiting_reason?.trim()
  if (!reason) return null
  return reason.charAt(0).toUpperCase() + reason.slice(1)
}

/** A placeholder for a matrix computed from `needs` outputs, not expanded yet. */
export function isMatrixPlaceholder(job: { status: string; pending_expansion?: boolean }): boolean {
  return job.pending_expansion === true && job.status === 'pending'
}

/** A job's state in words: "matrix pending expansion" for a waiting placeholder. */
export function jobStateLabel(job: { status: string; pending_expansion?: boolean }): string {
  return isMatrixPlaceholder(job) ? 'matrix pending expansion' : statusLabel(job.status)
}
