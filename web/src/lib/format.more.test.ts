import { describe, expect, test } from 'vitest'
import { jobTitle, matrixGroup, relativeTime } from './format'

describe('relativeTime', () => {
  const now = Date.parse('2026-01-10T12:00:00Z')
  test('recent, minutes, hours, days, then the date', () => {
    expect(relativeTime('2026-01-10T11:59:58Z', now)).toBe('just now')
    expect(relativeTime('2026-01-10T11:59:18Z', now)).toBe('42s ago')
    expect(relativeTime('2026-01-10T11:55:00Z', now)).toBe('5 min ago')
    expect(relativeTime('2026-01-10T09:00:00Z', now)).toBe('3 h ago')
    expect(relativeTime('2026-01-09T11:00:00Z', now)).toBe('1 day ago')
    expect(relativeTime('2025-10-01T11:00:00Z', now)).toMatch(/^2025-10-0[12]$/)
    expect(relativeTime(null, now)).toBe('')
  })
})

describe('jobTitle', () => {
  test('matrix jobs keep their name and add the values, as GitHub does', () => {
    expect(jobTitle({ name: 'build (linux, 3.11)', display_name: 'Build' })).toBe('Build (linux, 3.11)')
    expect(jobTitle({ name: 'test (mac)', display_name: 'test (mac)' })).toBe('test (mac)')
    expect(jobTitle({ name: 'lint', display_name: 'Lint' })).toBe('Lint')
    expect(jobTitle({ name: 'x (a)', display_name: 'X (a)' })).toBe('X (a)')
  })
  test('matrixGroup', () => {
    expect(matrixGroup('build (linux, 3.11)')).toBe('build')
    expect(matrixGroup('lint')).toBeNull()
  })
})
