// The lines of one log (a step's, a job's or the build's): numbering,
// `::group::` / `::endgroup::` folding and search, kept incremental so 100k lines stay cheap.
import { type AnsiState, PLAIN, endState, stripAnsi } from './ansi'

const GROUP_START = '::group::'
const GROUP_END = '::endgroup::'
// `::error file=a.py,line=3,title=T::message` (and warning, notice): GitHub shows the line as
// "Error: message", coloured, instead of the raw workflow command.
const ANNOTATION = /^::(error|warning|notice)(?:\s[^:]*)?::(.*)$/
const LEVEL_LABEL = { error: 'Error', warning: 'Warning', notice: 'Notice' } as const
export type AnnotationLevel = keyof typeof LEVEL_LABEL

/** A workflow command's message as written: %25, %0D and %0A escape '%', CR and LF. */
function unescapeCommandData(s: string): string {
  return s.replace(/%0D/gi, '').replace(/%0A/gi, ' ').replace(/%25/g, '%')
}

export interface LogLine {
  /** Line number shown in the gutter (1-based, group ends not counted). */
  n: number
  raw: string
  /** Text without escape sequences: what search looks at. */
  plain: string
  /** ANSI state at the start of the line. */
  start: AnsiState
  /** Index into `groups` when this line opens a group. */
  opens: number
  /** Nesting depth (0 outside any group). */
  depth: number
  /** When the chunk that completed the line was stored (ISO 8601), if known. */
  time: string | null
  /** Set when the line is an `::error::`, `::warning::` or `::notice::` command. */
  level?: AnnotationLevel
}

export interface LogGroup {
  title: string
  /** Index of the header line in `lines`. */
  header: number
  /** Index just past the group's last line; the line count while the group is still open. */
  end: number
  open: boolean
}

export class LogBuffer {
  readonly lines: LogLine[] = []
  readonly groups: LogGroup[] = []
  /** Text after the last newline: shown, but not a line until it is completed. */
  tail = ''
  version = 0
  private state: AnsiState = PLAIN
  private stack: number[] = []
  private listeners = new Set<() => void>()

  /** The highest log seq appended (0: none, or chunks appended without a seq). */
  lastSeq = 0

  /** Append a chunk; with `seq`, a chunk at or below the last one appended is a repeat and
   * dropped, so history pages and the live stream can overlap safely. */
  append(content: string, time: string | null = null, seq = 0): void {
    if (seq) {
      if (seq <= this.lastSeq) return
      this.lastSeq = seq
    }
    if (!content) return
    const text = this.tail + content
    const parts = text.split('\n')
    this.tail = parts.pop() ?? ''
    for (const part of parts) this.addLine(part, time)
    for (const g of this.stack) this.groups[g]!.end = this.lines.length
    this.version++
    for (const fn of this.listeners) fn()
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  get lineCount(): number {
    return this.lines.length
  }

  /** The displayable tail line, if the last chunk did not end with a newline. */
  get pendingLine(): string | null {
    return this.tail || null
  }

  private addLine(rawLine: string, time: string | null): void {
    // A progress bar rewrites its line with CR; the last rewrite is what a terminal would show.
    let raw = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine
    const cr = raw.lastIndexOf('\r')
    if (cr >= 0) raw = raw.slice(cr + 1)
    const plain = stripAnsi(raw)
    const start = this.state
    this.state = endState(raw, start)
    if (plain.startsWith(GROUP_END)) {
      const g = this.stack.pop()
      if (g !== undefined) {
        this.groups[g]!.end = this.lines.length
        this.groups[g]!.open = false
      }
      return
    }
    const n = this.lines.length + 1
    if (plain.startsWith(GROUP_START)) {
      const title = plain.slice(GROUP_START.length).trim() || 'group'
      const g = this.groups.length
      this.groups.push({ title, header: this.lines.length, end: this.lines.length + 1, open: true })
      this.lines.push({ n, raw: title, plain: title, start: PLAIN, opens: g, depth: this.stack.length, time })
      this.stack.push(g)
      return
    }
    const cmd = ANNOTATION.exec(plain)
    if (cmd) {
      const level: AnnotationLevel = cmd[1] === 'error' ? 'error' : cmd[1] === 'warning' ? 'warning' : 'notice'
      const text = `${LEVEL_LABEL[level]}: ${unescapeCommandData(cmd[2] ?? '')}`
      this.lines.push({ n, raw: text, plain: text, start: PLAIN, opens: -1, depth: this.stack.length, time, level })
      return
    }
    this.lines.push({ n, raw, plain, start, opens: -1, depth: this.stack.length, time })
  }
}

/**
 * Indices of the lines to show, skipping the insides of collapsed groups. Walks headers and
 * visible lines only, so a folded 100k-line group costs one step.
 */
export function visibleLines(buf: LogBuffer, collapsed: ReadonlySet<number>): number[] {
  const out: number[] = []
  const lines = buf.lines
  let i = 0
  while (i < lines.length) {
    out.push(i)
    const g = lines[i]!.opens
    i = g >= 0 && collapsed.has(g) ? Math.max(buf.groups[g]!.end, i + 1) : i + 1
  }
  return out
}

/** Indices of the lines whose text contains `query` (case-insensitive). */
export function searchLines(buf: LogBuffer, query: string): number[] {
  if (!query) return []
  const needle = query.toLowerCase()
  const out: number[] = []
  const lines = buf.lines
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.plain.toLowerCase().includes(needle)) out.push(i)
  }
  return out
}

/** The groups enclosing line `index` (outermost first): unfold them to reveal it. */
export function enclosingGroups(buf: LogBuffer, index: number): number[] {
  const out: number[] = []
  for (let g = 0; g < buf.groups.length; g++) {
    const grp = buf.groups[g]!
    if (grp.header < index && index < grp.end) out.push(g)
  }
  return out
}

/** The line an `::error::` / `::warning::` / `::notice::` command with this message became,
 * if the buffer has it (the first such line: an annotation keeps no line number). */
export function findAnnotationLine(buf: LogBuffer, level: string, message: string): LogLine | undefined {
  const flat = (t: string): string => t.replace(/\s+/g, ' ').trim()
  const want = flat(message)
  return buf.lines.find((l) => l.level === level && flat(l.plain.slice(l.plain.indexOf(':') + 1)) === want)
}
