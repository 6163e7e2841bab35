/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** API prefix: `/api/v1` when served by the service, `/ci_service/api/v1` behind the gateway. */
  readonly VITE_CI_API_BASE?: string
}

interface ImportMeta {
  readonly env: ImportMetaEnv
}
