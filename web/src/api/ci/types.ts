// The API's shapes. The REST ones come from the service's OpenAPI schema (`npm run gen:api`
// regenerates schema.d.ts from the saved openapi.json); the SSE payloads and the YAML problem list
// are not in the schema, so they are written here from DESIGN.md section 5.
import type { components } from './schema'

type Schemas = components['schemas']

export type BuildStatus = Schemas['BuildStatus']
export type JobStatus = Schemas['JobStatus']
export type StepStatus = JobStatus
export type Build = Schemas['BuildPublic']
export type BuildDetail = Schemas['BuildDetail']
export type Job = Schemas['JobPublic']
export type Step = Schemas['StepPublic']
export type Edge = Schemas['EdgePublic']
export type BuildPage = Schemas['BuildPage']
export type LogChunk = Schemas['LogChunkPublic']
export type LogPage = Schemas['LogPage']
export type CreateBuildRequest = Schemas['BuildCreate']
export type ValidationProblem = Schemas['ValidationError']

/** A `status` SSE event. */
export interface StatusEvent {
  kind: 'build' | 'job' | 'step'
  build_id: number
  job_name: string | null
  step_index: number | null
  status: string
  exit_code: number | null
}

/** An `end` SSE event: the build finished and every chunk was sent. */
export interface EndEvent {
  status: BuildStatus
}

/** One YAML problem in a 422 answer to CreateBuild. */
export interface YamlProblem {
  line: number
  column: number
  message: string
}
