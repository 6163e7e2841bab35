import { describe, expect, it } from 'vitest'
import { PALETTE16, PLAIN, ansiToHtml, contrast, escapeHtml, highlight, parseAnsi, segmentColors, stripAnsi } from './ansi'

const ESC = '\x1b'

describe('ANSI rendering', () => {
  it('renders SGR 30-37 and 90-97 as classes and 0 as reset', () => {
    expect(ansiToHtml(`${ESC}[31mred${ESC}[0m plain ${ESC}[92mbright`)).toBe(
      '<span class="ansi-fg-31">red</span> plain <span class="ansi-fg-92">bright</span>',
    )
  })

  it('combines bold with a colour and treats an empty SGR as reset', () => {
    expect(ansiToHtml(`${ESC}[1;33mwarn${ESC}[m ok`)).toBe('<span class="ansi-fg-33 ansi-bold">warn</span> ok')
  })

  it('escapes HTML in the text', () => {
    expect(ansiToHtml(`<script>alert("x")</script> & 'y'`)).toBe(
      '&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62; &#38; &#39;y&#39;',
    )
    expect(ansiToHtml(`${ESC}[31m<b>`)).toBe('<span class="ansi-fg-31">&#60;b&#62;</span>')
    expect(escapeHtml('<>&"\'')).not.toMatch(/[<>"']/)
  })

  it('carries colour state to the next line', () => {
    const first = parseAnsi(`${ESC}[34mstarts blue`)
    expect(first.end.fg).toBe(34)
    expect(ansiToHtml('still blue', first.end)).toBe('<span class="ansi-fg-34">still blue</span>')
    expect(parseAnsi(`x${ESC}[0m`, first.end).end).toEqual(PLAIN)
  })

  it('drops other escape sequences', () => {
    expect(ansiToHtml(`${ESC}[2K${ESC}[1Gdone${ESC}]0;title\x07!`)).toBe('done!')
    expect(stripAnsi(`${ESC}[31ma${ESC}[0mb`)).toBe('ab')
  })

  it('renders 256 colours and truecolour, in both the ; and : forms', () => {
    expect(parseAnsi(`${ESC}[38;5;196;1mx`).end).toMatchObject({ fg: '#ff0000', bold: true })
    expect(parseAnsi(`${ESC}[38;5;1mx`).end.fg).toBe(31)
    expect(parseAnsi(`${ESC}[48;5;244mx`).end.bg).toBe('#808080')
    expect(parseAnsi(`${ESC}[38;2;10;20;30mx`).end.fg).toBe('#0a141e')
    expect(parseAnsi(`${ESC}[38:2::10:20:30mx`).end.fg).toBe('#0a141e')
    expect(ansiToHtml(`${ESC}[38;2;255;128;0morange`)).toBe('<span style="color:#ff8000">orange</span>')
  })

  it('renders italic, underline, dim and strike-through, and resets them', () => {
    expect(ansiToHtml(`${ESC}[3;4mx${ESC}[23my${ESC}[0mz`)).toBe(
      '<span class="ansi-italic ansi-underline">x</span><span class="ansi-underline">y</span>z',
    )
    expect(ansiToHtml(`${ESC}[2;9mq`)).toBe('<span class="ansi-dim ansi-strike">q</span>')
  })

  it('keeps text readable on its background (WCAG AA)', () => {
    // Black on green is 1.1:1 with the terminal palette; the text turns white or black instead.
    const html = ansiToHtml(`${ESC}[30;42mok`)
    const m = /color:(#[0-9a-f]{6});background:(#[0-9a-f]{6})/.exec(html)!
    expect(contrast(m[1]!, m[2]!)).toBeGreaterThanOrEqual(4.5)
    // Dark blue text on the dark log background is lifted too.
    const { fg } = segmentColors({ fg: '#000080', bg: null, bold: false })
    expect(contrast(fg, '#0a0e12')).toBeGreaterThanOrEqual(4.5)
    // Every 16-colour foreground of the palette reads on the log background as it is.
    for (const code of [31, 32, 33, 34, 35, 36, 37, 90, 91, 92, 93, 94, 95, 96, 97]) {
      expect(segmentColors({ fg: code, bg: null, bold: false }).fg).toBe(PALETTE16[code])
    }
  })

  it('handles foreground reset 39, backgrounds and inverse', () => {
    expect(ansiToHtml(`${ESC}[41;97mX${ESC}[39mY`)).toBe(
      '<span style="color:#f0f6fc;background:#8e1519">X</span><span style="color:#c9d1d9;background:#8e1519">Y</span>',
    )
    expect(ansiToHtml(`${ESC}[7minv`)).toBe('<span style="color:#0a0e12;background:#c9d1d9">inv</span>')
  })
})

describe('highlight', () => {
  it('marks matches case-insensitively, across segment boundaries', () => {
    const { segments } = parseAnsi(`ab${ESC}[31mCD${ESC}[0mef`)
    expect(highlight(segments, 'bc').map((s) => [s.text, s.mark ?? false, s.fg])).toEqual([
      ['a', false, null],
      ['b', true, null],
      ['C', true, 31],
      ['D', false, 31],
      ['ef', false, null],
    ])
  })

  it('renders marks in HTML around the escaped text', () => {
    expect(ansiToHtml('a<b a<b', PLAIN, 'A<B')).toBe('<mark>a&#60;b</mark> <mark>a&#60;b</mark>')
  })

  it('leaves lines without a match alone', () => {
    const { segments } = parseAnsi('nothing here')
    expect(highlight(segments, 'zzz')).toBe(segments)
  })
})
