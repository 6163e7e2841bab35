import { describe, expect, it } from 'vitest'
import { LogBuffer, enclosingGroups, findAnnotationLine, searchLines, visibleLines } from './logbuffer'

function texts(buf: LogBuffer, idx: number[]): string[] {
  return idx.map((i) => buf.lines[i]!.plain)
}

describe('LogBuffer', () => {
  it('splits chunks into numbered lines', () => {
    const buf = new LogBuffer()
    buf.append('first\nsecond\n')
    buf.append('third\n')
    expect(buf.lines.map((l) => [l.n, l.plain])).toEqual([
      [1, 'first'],
      [2, 'second'],
      [3, 'third'],
    ])
    expect(buf.pendingLine).toBeNull()
  })

  it('joins a line split across chunks and shows a trailing partial line', () => {
    const buf = new LogBuffer()
    buf.append('hel')
    expect(buf.lines).toHaveLength(0)
    expect(buf.pendingLine).toBe('hel')
    buf.append('lo\nwor')
    expect(texts(buf, [0])).toEqual(['hello'])
    expect(buf.pendingLine).toBe('wor')
  })

  it('folds ::group:: sections and drops ::endgroup:: lines', () => {
    const buf = new LogBuffer()
    buf.append('before\n::group::Install deps\na\nb\n::endgroup::\nafter\n')
    expect(buf.lines.map((l) => [l.plain, l.opens, l.depth])).toEqual([
      ['before', -1, 0],
      ['Install deps', 0, 0],
      ['a', -1, 1],
      ['b', -1, 1],
      ['after', -1, 0],
    ])
    expect(buf.groups).toEqual([{ title: 'Install deps', header: 1, end: 4, open: false }])
    expect(texts(buf, visibleLines(buf, new Set()))).toEqual(['before', 'Install deps', 'a', 'b', 'after'])
    expect(texts(buf, visibleLines(buf, new Set([0])))).toEqual(['before', 'Install deps', 'after'])
  })

  it('keeps a still-open group growing as lines arrive', () => {
    const buf = new LogBuffer()
    buf.append('::group::Live\nx\n')
    buf.append('y\n')
    expect(buf.groups[0]).toMatchObject({ open: true, end: 3 })
    expect(texts(buf, visibleLines(buf, new Set([0])))).toEqual(['Live'])
    buf.append('::endgroup::\nz\n')
    expect(texts(buf, visibleLines(buf, new Set([0])))).toEqual(['Live', 'z'])
  })

  it('nests groups; folding the outer one hides the inner', () => {
    const buf = new LogBuffer()
    buf.append('::group::outer\n1\n::group::inner\n2\n::endgroup::\n3\n::endgroup::\n4\n')
    expect(texts(buf, visibleLines(buf, new Set([1])))).toEqual(['outer', '1', 'inner', '3', '4'])
    expect(texts(buf, visibleLines(buf, new Set([0])))).toEqual(['outer', '4'])
    const two = buf.lines.findIndex((l) => l.plain === '2')
    expect(enclosingGroups(buf, two)).toEqual([0, 1])
  })

  it('recognises group markers wrapped in colour codes and keeps colour state', () => {
    const buf = new LogBuffer()
    buf.append('\x1b[36m::group::Coloured\x1b[0m\n\x1b[31mred start\nstill red\x1b[0m\nplain\n::endgroup::\n')
    expect(buf.groups[0]!.title).toBe('Coloured')
    expect(buf.lines[2]!.start.fg).toBe(31)
    expect(buf.lines[3]!.start.fg).toBeNull()
  })

  it('keeps the last carriage-return rewrite of a line and strips CRLF', () => {
    const buf = new LogBuffer()
    buf.append('10%\r50%\r100%\r\nnext\r\n')
    expect(texts(buf, [0, 1])).toEqual(['100%', 'next'])
  })

  it('searches the text without escape codes, case-insensitively', () => {
    const buf = new LogBuffer()
    buf.append('Error: one\nfine\n\x1b[31mERR\x1b[0mOR two\n')
    expect(searchLines(buf, 'error')).toEqual([0, 2])
    expect(searchLines(buf, '')).toEqual([])
  })

  it('notifies subscribers and handles 100k lines with groups', () => {
    const buf = new LogBuffer()
    let calls = 0
    const off = buf.subscribe(() => calls++)
    const chunk: string[] = []
    for (let i = 1; i <= 100_000; i++) {
      if (i % 1000 === 1) chunk.push(`::group::block ${i}`)
      chunk.push(`line ${i}`)
      if (i % 1000 === 0) chunk.push('::endgroup::')
      if (i % 5000 === 0) {
        buf.append(chunk.join('\n') + '\n')
        chunk.length = 0
      }
    }
    off()
    buf.append('after unsubscribe\n')
    expect(calls).toBe(20)
    expect(buf.groups).toHaveLength(100)
    expect(buf.lines).toHaveLength(100_101)
    const all = new Set(buf.groups.map((_, i) => i))
    expect(visibleLines(buf, all)).toHaveLength(101)
    expect(searchLines(buf, 'line 99999')).toHaveLength(1)
  })
})

describe('LogBuffer seqs and times', () => {
  it('a repeated or older seq is dropped; lines keep the time of their chunk', () => {
    const b = new LogBuffer()
    b.append('one\ntw', '2026-01-01T00:00:01Z', 1)
    b.append('o\n', '2026-01-01T00:00:02Z', 2)
    b.append('one\ntw', '2026-01-01T00:00:01Z', 1)
    b.append('zzz\n', '2026-01-01T00:00:00Z', 2)
    expect(b.lines.map((l) => [l.plain, l.time])).toEqual([
      ['one', '2026-01-01T00:00:01Z'],
      ['two', '2026-01-01T00:00:02Z'],
    ])
    expect(b.lastSeq).toBe(2)
  })

  it('shows ::error:: / ::warning:: / ::notice:: commands as GitHub does, other lines as written', () => {
    const b = new LogBuffer()
    b.append('::error file=a.py,line=3,title=T::tests failed\n::warning::50%25 slower%0Athan before\n::notice title=x::fyi\n::error:bad\nplain ::error::x\n')
    expect(b.lines.map((l) => [l.plain, l.level])).toEqual([
      ['Error: tests failed', 'error'],
      ['Warning: 50% slower than before', 'warning'],
      ['Notice: fyi', 'notice'],
      ['::error:bad', undefined],
      ['plain ::error::x', undefined],
    ])
    expect(searchLines(b, 'error: tests')).toEqual([0])
    // An annotation finds the line it came from (its message as stored, newlines and all).
    expect(findAnnotationLine(b, 'warning', '50% slower\nthan before')?.n).toBe(2)
    expect(findAnnotationLine(b, 'error', 'tests failed')?.n).toBe(1)
    expect(findAnnotationLine(b, 'warning', 'tests failed')).toBeUndefined()
  })
})
