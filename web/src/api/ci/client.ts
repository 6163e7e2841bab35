// The app's one BuildsClient: base URL from the build (VITE_CI_API_BASE, default `/api/v1`) and
// an optional bearer token kept in localStorage, editable in the header.
import { ref, computed } from 'vue'
import { ApiError, BuildsClient, type WhoAmI } from './builds'

const TOKEN_KEY = 'ci-executor.token'
export const apiBase = import.meta.env.VITE_CI_API_BASE || '/api/v1'

function readToken(): string {
  try {
    return localStorage.getItem(TOKEN_KEY) ?? ''
  } catch {
    return ''
  }
}

export const apiToken = ref(readToken())

export function setToken(token: string): void {
  apiToken.value = token.trim()
  try {
    if (apiToken.value) localStorage.setItem(TOKEN_KEY, apiToken.value)
    else localStorage.removeItem(TOKEN_KEY)
  } catch {
    // Private browsing may refuse storage; the token still works for this page.
  }
}

const client = computed(() => new BuildsClient(apiBase, apiToken.value || null))

/** A message for an error from the client, with a hint where the fix is in the UI. */
export function describeError(e: unknown): string {
  if (e instanceof ApiError && e.status === 401) return 'not authorised: set an API token (top right)'
  if (e instanceof ApiError && e.status === 403) return 'forbidden: this API token may not do that'
  return e instanceof Error ? e.message : String(e)
}

export function useBuildsClient(): BuildsClient {
  return client.value
}

/** The caller as the service sees the current token (GET /whoami); null until known. */
export const viewer = ref<WhoAmI | null>(null)
/** Why the token was not accepted ('' when it was, or while unknown). */
export const viewerProblem = ref('')
/** Cancel, Retry and Run need a write token; hidden until the role is known. */
export const canWrite = computed(() => viewer.value?.can_write === true)

export async function loadViewer(): Promise<void> {
  try {
    viewer.value = await client.value.whoami()
    viewerProblem.value = ''
  } catch (e) {
    viewer.value = null
    viewerProblem.value =
      e instanceof ApiError && e.status === 401 ? (apiToken.value ? 'token rejected' : 'token needed') : describeError(e)
  }
}
