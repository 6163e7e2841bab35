// The API's shapes. The REST ones come from the service's OpenAPI schema (`npm run gen:api`
// regenerates openapi.json from the service and schema.d.ts from it), the SSE payloads included;
// only the YAML problem list (a 422 `detail`) is not in the schema and is written here.
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
export type Annotation = Schemas['AnnotationPublic']
export type BuildPage = Schemas['BuildPage']
export type LogChunk = Schemas['LogChunkPublic']
export type LogPage = Schemas['LogPage']
export type CreateBuildRequest = Schemas['BuildCreate']
export type ValidationProblem = Schemas['ValidationError']

// The SSE payloads, from the service's LogStreamEvents schema (app/logs/events.py).
export type LogStreamEvents = Schemas['LogStreamEvents']
/** A build, job or step status change: narrowing on `kind` types `status` and the names. */
export type StatusEvent = LogStreamEvents['status']
export type EndEvent = Schemas['EndEvent']
export type WhoAmI = Schemas['WhoAmI']
export type BuildFacets = Schemas['BuildFacets']
export type RetryRequest = Schemas['RetryRequest']

/** One YAML problem in a 422 answer to CreateBuild. */
export interface YamlProblem {
  line: number
  column: number
  message: string
}
