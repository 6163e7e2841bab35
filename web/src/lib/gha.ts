// GitHub Actions output on the build page: step summaries ($GITHUB_STEP_SUMMARY, Markdown) and
// annotations (::error file=…,line=…::message). The gha area adds them to the build detail
// (`StepPublic.summary`, `BuildDetail.annotations`); until that is in this branch's OpenAPI
// document they are read here with type guards against that documented shape, and the page
// shows nothing when the service does not send them.
import DOMPurify from 'dompurify'
import { marked } from 'marked'

export interface Annotation {
  job_name: string
  step_index: number
  level: string
  message: string
  title?: string | null
  file?: string | null
  line?: number | null
  end_line?: number | null
  col?: number | null
  end_column?: number | null
}

function isAnnotation(v: unknown): v is Annotation {
  if (typeof v !== 'object' || v === null) return false
  const r: Record<string, unknown> = { ...v }
  return typeof r.job_name === 'string' && typeof r.step_index === 'number' && typeof r.level === 'string' && typeof r.message === 'string'
}

/** The build's annotations, if the service sends them. */
export function annotationsOf(build: object): Annotation[] {
  const list: unknown = 'annotations' in build ? build.annotations : undefined
  return Array.isArray(list) ? list.filter(isAnnotation) : []
}

/** A step's summary Markdown, if the service sends it. */
export function summaryOf(step: object): string {
  const s: unknown = 'summary' in step ? step.summary : undefined
  return typeof s === 'string' ? s : ''
}

/** Markdown to HTML that is safe to insert: GitHub-flavoured Markdown (tables, task lists),
 * then DOMPurify removes scripts, event handlers and javascript: URLs, as GitHub sanitises
 * summaries. */
export function renderMarkdown(md: string): string {
  const html = marked.parse(md, { async: false, gfm: true })
  const fragment = DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, RETURN_DOM_FRAGMENT: true })
  // An image without alt text is announced by its file name; a summary's images are decoration
  // unless their author said otherwise.
  for (const img of fragment.querySelectorAll('img:not([alt])')) img.setAttribute('alt', '')
  const box = document.createElement('div')
  box.append(fragment)
  return box.innerHTML
}
