import { describe, expect, it } from 'vitest'
import { elapsed, formatDuration, parseVariables, shortSha } from './format'

describe('format', () => {
  it('formats durations', () => {
    expect(formatDuration(450)).toBe('450ms')
    expect(formatDuration(12_300)).toBe('12s')
    expect(formatDuration(185_000)).toBe('3m 05s')
    expect(formatDuration(2 * 3600_000 + 4 * 60_000)).toBe('2h 04m')
    expect(formatDuration(null)).toBe('')
  })

  it('measures elapsed time to the end or to now', () => {
    expect(elapsed('2026-01-01T00:00:00Z', '2026-01-01T00:01:00+00:00')).toBe(60_000)
    expect(elapsed('2026-01-01T00:00:00Z', null, Date.parse('2026-01-01T00:00:05Z'))).toBe(5000)
    expect(elapsed(null, null)).toBeNull()
  })

  it('shortens commits to 7 characters', () => {
    expect(shortSha('0123456789abcdef')).toBe('0123456')
    expect(shortSha(null)).toBe('')
  })

  it('parses KEY=value lines', () => {
    expect(parseVariables('A=1\n\n# note\nB = x=y \nC=')).toEqual({ variables: { A: '1', B: ' x=y ', C: '' }, errors: [] })
    const bad = parseVariables('ok=1\nnovalue\n9X=2')
    expect(bad.variables).toEqual({ ok: '1' })
    expect(bad.errors).toHaveLength(2)
    expect(bad.errors[0]).toMatch(/^line 2:/)
  })
})
