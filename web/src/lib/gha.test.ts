// @vitest-environment jsdom
import { describe, expect, it } from 'vitest'
import { renderMarkdown } from './gha'

describe('step summaries', () => {
  it('renders GitHub-flavoured Markdown', () => {
    const html = renderMarkdown('## Results\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- [x] done\n')
    expect(html).toContain('<h2>Results</h2>')
    expect(html).toContain('<table>')
    expect(html).toContain('<td>1</td>')
    expect(html).toContain('type="checkbox"')
  })

  it('sanitises scripts, handlers and javascript: links', () => {
    const html = renderMarkdown('<script>alert(1)</script><img src=x onerror="alert(2)">\n\nsee [x](javascript:alert(3))\n')
    expect(html).not.toMatch(/<script|onerror|href="javascript:/i)
    expect(html).toContain('<img src="x" alt="">')
  })
})
