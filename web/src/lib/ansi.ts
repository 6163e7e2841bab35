// ANSI SGR styles to HTML spans: 16 colours (as classes, themed in style.css), 256 colours and
// truecolour (inline colours), bold, dim, italic, underline and strike-through, inverse. Colour
// state carries from one line to the next, as in a terminal, so a line starts in the state the
// previous one ended in.
//
// Our own small parser rather than ansi_up / anser / ansi-to-html: the log viewer is virtualised
// and renders any slice of a 100k-line log, so each line must start from a saved state, and
// search matches are marked across styled segments. Those libraries keep their state inside a
// converter fed the whole stream in order and return finished HTML, which fits neither.

/** A colour: an SGR 16-colour code (30-37, 90-97 as foreground; 40-47, 100-107 as background)
 * or an `#rrggbb` string (256-colour and truecolour forms). */
export type AnsiColor = number | string

export interface AnsiState {
  readonly fg: AnsiColor | null
  readonly bg: AnsiColor | null
  readonly bold: boolean
  readonly dim?: boolean
  readonly italic?: boolean
  readonly underline?: boolean
  readonly strike?: boolean
  readonly inverse?: boolean
}

export const PLAIN: AnsiState = Object.freeze({ fg: null, bg: null, bold: false })

export interface Segment extends AnsiState {
  text: string
  /** Part of a search match. */
  mark?: boolean
}

// CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST) and two-byte escapes.
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?/g
const SGR = /^\x1b\[([0-9;:]*)m$/

// The 16 colours as the stylesheet draws them on the dark log background (style.css keeps the
// same values); needed here to check contrast.
export const PALETTE16: Record<number, string> = {
  30: '#6e7681', 31: '#ff7b72', 32: '#3fb950', 33: '#d29922', 34: '#58a6ff', 35: '#bc8cff', 36: '#39c5cf', 37: '#b1bac4',
  90: '#8b949e', 91: '#ffa198', 92: '#56d364', 93: '#e3b341', 94: '#79c0ff', 95: '#d2a8ff', 96: '#56d4dd', 97: '#f0f6fc',
  40: '#484f58', 41: '#8e1519', 42: '#1a7f37', 43: '#9a6700', 44: '#0d419d', 45: '#6e40c9', 46: '#1b7c83', 47: '#b1bac4',
  100: '#6e7681', 101: '#da3633', 102: '#2ea043', 103: '#bb8009', 104: '#1f6feb', 105: '#8957e5', 106: '#3192aa', 107: '#f0f6fc',
}
export const LOG_FG = '#c9d1d9'
export const LOG_BG = '#0a0e12'

const hex2 = (n: number): string => Math.max(0, Math.min(255, Math.round(n))).toString(16).padStart(2, '0')
const rgb = (r: number, g: number, b: number): string => `#${hex2(r)}${hex2(g)}${hex2(b)}`

/** xterm's 256-colour table: 0-15 the 16 colours, 16-231 a 6x6x6 cube, 232-255 greys. */
export function color256(n: number, background: boolean): AnsiColor {
  if (n < 8) return (background ? 40 : 30) + n
  if (n < 16) return (background ? 100 : 90) + n - 8
  if (n < 232) {
    const c = n - 16
    const level = (v: number): number => (v === 0 ? 0 : 55 + v * 40)
    return rgb(level(Math.floor(c / 36)), level(Math.floor(c / 6) % 6), level(c % 6))
  }
  const grey = 8 + (n - 232) * 10
  return rgb(grey, grey, grey)
}

/** Apply one SGR parameter list to a state. */
export function applySgr(state: AnsiState, params: string): AnsiState {
  // `38:5:n` and `38:2::r:g:b` (colon forms) read like their `;` forms.
  const codes = params === '' ? [0] : params.split(/[;:]/).map((p) => (p === '' ? 0 : Number(p)))
  const next: { -readonly [K in keyof AnsiState]: AnsiState[K] } = { ...state }
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i]!
    if (c === 0) {
      next.fg = null
      next.bg = null
      next.bold = false
      next.dim = next.italic = next.underline = next.strike = next.inverse = false
    } else if (c === 1) next.bold = true
    else if (c === 2) next.dim = true
    else if (c === 3) next.italic = true
    else if (c === 4) next.underline = true
    else if (c === 7) next.inverse = true
    else if (c === 9) next.strike = true
    else if (c === 21) next.underline = true
    else if (c === 22) next.bold = next.dim = false
    else if (c === 23) next.italic = false
    else if (c === 24) next.underline = false
    else if (c === 27) next.inverse = false
    else if (c === 29) next.strike = false
    else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) next.fg = c
    else if (c === 39) next.fg = null
    else if ((c >= 40 && c <= 47) || (c >= 100 && c <= 107)) next.bg = c
    else if (c === 49) next.bg = null
    else if (c === 38 || c === 48) {
      let value: AnsiColor | null = null
      if (codes[i + 1] === 5 && i + 2 < codes.length) {
        value = color256(codes[i + 2]! & 255, c === 48)
        i += 2
      } else if (codes[i + 1] === 2 && i + 4 < codes.length) {
        // `38;2;r;g;b`, or the colon form with an empty colour-space id `38:2::r:g:b`.
        const skip = params.includes('::') ? 1 : 0
        value = rgb(codes[i + 2 + skip]!, codes[i + 3 + skip]!, codes[i + 4 + skip]!)
        i += 4 + skip
      } else {
        i = codes.length
      }
      if (value !== null) {
        if (c === 38) next.fg = value
        else next.bg = value
      }
    }
  }
  const keys: (keyof AnsiState)[] = ['fg', 'bg', 'bold', 'dim', 'italic', 'underline', 'strike', 'inverse']
  if (keys.every((k) => (next[k] ?? false) === (state[k] ?? false))) return state
  if (keys.every((k) => !next[k])) return PLAIN
  return next
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

function toHex(c: AnsiColor | null, fallback: string): string {
  if (c === null) return fallback
  return typeof c === 'number' ? (PALETTE16[c] ?? fallback) : c
}

function luminance(hex: string): number {
  const v = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255).map((x) => (x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4))
  return 0.2126 * v[0]! + 0.7152 * v[1]! + 0.0722 * v[2]!
}

/** WCAG contrast ratio of two `#rrggbb` colours (1 to 21). */
export function contrast(a: string, b: string): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x)
  return (hi! + 0.05) / (lo! + 0.05)
}

/** The colours a segment is drawn in, after inverse, with a foreground that stays readable
 * (WCAG AA, 4.5:1) on its background: a program's black-on-green still reads. */
export function segmentColors(seg: AnsiState): { fg: string; bg: string | null } {
  let fg = toHex(seg.fg, LOG_FG)
  let bg = seg.bg === null ? null : toHex(seg.bg, LOG_BG)
  if (seg.inverse) [fg, bg] = [bg ?? LOG_BG, fg]
  const behind = bg ?? LOG_BG
  if (contrast(fg, behind) < 4.5) {
    fg = contrast('#ffffff', behind) >= contrast('#000000', behind) ? '#ffffff' : '#000000'
  }
  return { fg, bg }
}

function styleOf(seg: Segment): { cls: string; style: string } {
  const c: string[] = []
  const st: string[] = []
  const plainColours = !seg.inverse && (seg.fg === null || typeof seg.fg === 'number') && (seg.bg === null || typeof seg.bg === 'number')
  const { fg, bg } = segmentColors(seg)
  // 16-colour text on the log background keeps its class (themeable); anything else is inline.
  if (plainColours && seg.bg === null && seg.fg !== null && fg === toHex(seg.fg, LOG_FG)) c.push(`ansi-fg-${seg.fg}`)
  else if (seg.fg !== null || seg.bg !== null || seg.inverse) st.push(`color:${fg}`)
  if (bg !== null) st.push(`background:${bg}`)
  if (seg.bold) c.push('ansi-bold')
  if (seg.dim) c.push('ansi-dim')
  if (seg.italic) c.push('ansi-italic')
  if (seg.underline) c.push('ansi-underline')
  if (seg.strike) c.push('ansi-strike')
  return { cls: c.join(' '), style: st.join(';') }
}

/** HTML for segments: text escaped, styles as classes or inline colours, matches in <mark>. */
export function segmentsToHtml(segments: Segment[]): string {
  let html = ''
  for (const seg of segments) {
    const { cls, style } = styleOf(seg)
    let inner = escapeHtml(seg.text)
    if (cls || style) inner = `<span${cls ? ` class="${cls}"` : ''}${style ? ` style="${style}"` : ''}>${inner}</span>`
    if (seg.mark) inner = `<mark>${inner}</mark>`
    html += inner
  }
  return html
}

/** One line to HTML, starting from `start`. */
export function ansiToHtml(line: string, start: AnsiState = PLAIN, query = ''): string {
  return segmentsToHtml(highlight(parseAnsi(line, start).segments, query))
}
