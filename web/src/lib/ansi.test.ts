import { describe, expect, it } from 'vitest'
import { PLAIN, ansiToHtml, escapeHtml, highlight, parseAnsi, stripAnsi } from './ansi'

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

  it('drops other escape sequences and skips 256-colour arguments', () => {
    expect(ansiToHtml(`${ESC}[2K${ESC}[1Gdone${ESC}]0;title\x07!`)).toBe('done!')
    const r = parseAnsi(`${ESC}[38;5;196;1mx`)
    expect(r.end).toEqual({ fg: null, bg: null, bold: true })
    expect(stripAnsi(`${ESC}[31ma${ESC}[0mb`)).toBe('ab')
  })

  it('handles foreground reset 39 and backgrounds', () => {
    expect(ansiToHtml(`${ESC}[41;97mX${ESC}[39mY`)).toBe(
      '<span class="ansi-fg-97 ansi-bg-41">X</span><span class="ansi-bg-41">Y</span>',
    )
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
