// ANSI SGR colours to HTML spans. Colour state carries from one line to the next, as in a
// terminal, so a line starts in the state the previous one ended in.

export interface AnsiState {
  readonly fg: number | null
  readonly bg: number | null
  readonly bold: boolean
}

export const PLAIN: AnsiState = Object.freeze({ fg: null, bg: null, bold: false })

export interface Segment extends AnsiState {
  text: string
  /** Part of a search match. */
  mark?: boolean
}

// CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST) and two-byte escapes.
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?/g
const SGR = /^\x1b\[([0-9;]*)m$/

/** Apply one SGR parameter list to a state. */
export function applySgr(state: AnsiState, params: string): AnsiState {
  const codes = params === '' ? [0] : params.split(';').map((p) => (p === '' ? 0 : Number(p)))
  let { fg, bg, bold } = state
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i]!
    if (c === 0) {
      fg = null
      bg = null
      bold = false
    } else if (c === 1) bold = true
    else if (c === 22) bold = false
    else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) fg = c
    else if (c === 39) fg = null
    else if ((c >= 40 && c <= 47) || (c >= 100 && c <= 107)) bg = c
    else if (c === 49) bg = null
    else if (c === 38 || c === 48) {
      // 256-colour and truecolour forms are not rendered; skip their arguments.
      i += codes[i + 1] === 5 ? 2 : codes[i + 1] === 2 ? 4 : 0
    }
  }
  if (fg === state.fg && bg === state.bg && bold === state.bold) return state
  return { fg, bg, bold }
}

/** Split a line into styled segments; `end` is the state the next line starts in. */
export function parseAnsi(line: string, start: AnsiState = PLAIN): { segments: Segment[]; end: AnsiState } {
  const segments: Segment[] = []
  let state = start
  if (!line.includes('\x1b')) {
    if (line) segments.push({ ...state, text: line })
    return { segments, end: state }
  }
  let last = 0
  for (const m of line.matchAll(ESCAPES)) {
    const at = m.index
    if (at > last) segments.push({ ...state, text: line.slice(last, at) })
    const sgr = SGR.exec(m[0])
    if (sgr) state = applySgr(state, sgr[1]!)
    last = at + m[0].length
  }
  if (last < line.length) segments.push({ ...state, text: line.slice(last) })
  return { segments, end: state }
}

/** The state after a line, without building its segments. */
export function endState(line: string, start: AnsiState): AnsiState {
  if (!line.includes('\x1b')) return start
  let state = start
  for (const m of line.matchAll(ESCAPES)) {
    const sgr = SGR.exec(m[0])
    if (sgr) state = applySgr(state, sgr[1]!)
  }
  return state
}

export function stripAnsi(line: string): string {
  return line.includes('\x1b') ? line.replace(ESCAPES, '') : line
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/** Mark the case-insensitive occurrences of `query` in the segments' text. */
export function highlight(segments: Segment[], query: string): Segment[] {
  if (!query) return segments
  const text = segments.map((s) => s.text).join('')
  const hay = text.toLowerCase()
  const needle = query.toLowerCase()
  const ranges: [number, number][] = []
  for (let i = hay.indexOf(needle); i >= 0; i = hay.indexOf(needle, i + needle.length)) {
    ranges.push([i, i + needle.length])
  }
  if (ranges.length === 0) return segments
  const out: Segment[] = []
  let pos = 0
  let r = 0
  for (const seg of segments) {
    const segEnd = pos + seg.text.length
    let cur = pos
    while (cur < segEnd) {
      while (r < ranges.length && ranges[r]![1] <= cur) r++
      const range = ranges[r]
      if (!range || range[0] >= segEnd) {
        out.push({ ...seg, text: text.slice(cur, segEnd) })
        cur = segEnd
      } else if (range[0] > cur) {
        out.push({ ...seg, text: text.slice(cur, range[0]) })
        cur = range[0]
      } else {
        const stop = Math.min(range[1], segEnd)
        out.push({ ...seg, text: text.slice(cur, stop), mark: true })
        cur = stop
      }
    }
    pos = segEnd
  }
  return out
}

function classes(seg: Segment): string {
  const c: string[] = []
  if (seg.fg !== null) c.push(`ansi-fg-${seg.fg}`)
  if (seg.bg !== null) c.push(`ansi-bg-${seg.bg}`)
  if (seg.bold) c.push('ansi-bold')
  return c.join(' ')
}

/** HTML for segments: text escaped, styles as classes, matches in <mark>. */
export function segmentsToHtml(segments: Segment[]): string {
  let html = ''
  for (const seg of segments) {
    const cls = classes(seg)
    let inner = escapeHtml(seg.text)
    if (cls) inner = `<span class="${cls}">${inner}</span>`
    if (seg.mark) inner = `<mark>${inner}</mark>`
    html += inner
  }
  return html
}

/** One line to HTML, starting from `start`. */
export function ansiToHtml(line: string, start: AnsiState = PLAIN, query = ''): string {
  return segmentsToHtml(highlight(parseAnsi(line, start).segments, query))
}
