// GitHub Actions output on the build page: step summaries ($GITHUB_STEP_SUMMARY, Markdown) and
// annotations (::error file=…,line=…::message). Their shapes are the generated OpenAPI types
// (`BuildDetail.annotations`, `StepPublic.summary`); this module only turns a summary's
// Markdown into safe HTML.
import DOMPurify from 'dompurify'
import { marked } from 'marked'

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
