import { describe, expect, it } from 'vitest'
import { isMatrixPlaceholder, jobStateLabel, waitingNote } from './format'

describe('waitingNote', () => {
  it('says why a queued build or a pending job waits', () => {
    const reason = "waiting for concurrency group 'deploy': build #1 is running"
    expect(waitingNote({ status: 'queued', waiting_reason: reason })).toBe("Waiting for concurrency group 'deploy': build #1 is running")
    expect(waitingNote({ status: 'pending', waiting_reason: reason, concurrency_group: 'deploy' })).toMatch(/^Waiting for concurrency group 'deploy'/)
  })

  it('says nothing once it runs or finished, or without a reason', () => {
    const reason = "waiting for concurrency group 'deploy': build #1 is running"
    // A stale reason on a build that has since started is not shown.
    expect(waitingNote({ status: 'running', waiting_reason: reason })).toBeNull()
    expect(waitingNote({ status: 'cancelled', waiting_reason: reason })).toBeNull()
    expect(waitingNote({ status: 'queued', waiting_reason: null, concurrency_group: 'deploy' })).toBeNull()
    expect(waitingNote({ status: 'queued', waiting_reason: '  ' })).toBeNull()
    expect(waitingNote({ status: 'queued' })).toBeNull()
  })
})

describe('matrix placeholders', () => {
  it('reads a pending placeholder as "matrix pending expansion"', () => {
    expect(isMatrixPlaceholder({ status: 'pending', pending_expansion: true })).toBe(true)
    expect(jobStateLabel({ status: 'pending', pending_expansion: true })).toBe('matrix pending expansion')
  })

  it('keeps the status of ordinary jobs and of placeholders that ended unexpanded', () => {
    expect(isMatrixPlaceholder({ status: 'pending' })).toBe(false)
    expect(jobStateLabel({ status: 'pending', pending_expansion: false })).toBe('pending')
    // A placeholder skipped because its needs failed never expanded: it is just skipped.
    expect(isMatrixPlaceholder({ status: 'skipped', pending_expansion: true })).toBe(false)
    expect(jobStateLabel({ status: 'timed_out', pending_expansion: true })).toBe('timed out')
  })
})
