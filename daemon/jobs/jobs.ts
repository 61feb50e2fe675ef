// Daemon jobs: long work (sync) that outlives the client that asked for it. A job has an id, a list
// of files each with a status, progress, and a state; it runs its files with bounded parallelism,
// can be watched and cancelled, and is written to the state dir as it goes so that a daemon restart
// resumes it where it stopped (files already done are not touched again).
import { EventEmitter } from 'node:events'
import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { log } from '../log.js'
import { writeFileAtomic } from '../safe-write.js'
import { ensureOwnDirSync } from '../state-dir.js'

export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled'
export type FileStatus = 'pending' | 'ok' | 'failed'

export interface JobFile {
  /** Archive-relative path. */
  path: string
  size: number | null
  status: FileStatus
  message?: string
  /** Where it was fetched from (archive URL, S3 URI). */
  url?: string
  /** Bytes transferred from a source for it (0 when it was already cached). */
  fetched?: number
}

export interface JobRecord<Spec = unknown> {
  id: string
  kind: string
  spec: Spec
  state: JobState
  createdAt: string
  updatedAt: string
  /** Why a job failed or was cancelled (a file's own failure is in its entry). */
  message?: string
  files: JobFile[]
}

export interface JobProgress {
  id: string
  state: JobState
  files: number
  filesDone: number
  filesFailed: number
  bytes: number
  bytesDone: number
  /** Bytes per second over the job's running time. */
  rate: number
  message?: string
}

/** What a kind of job does with one of its files. */
export interface JobRunner<Spec> {
  kind: string
  parallelism: number
  /** Does the work for one file; resolves with what to record, throws with a message on failure. */
  runFile(job: JobRecord<Spec>, file: JobFile, signal: AbortSignal, onBytes: (n: number) => void): Promise<Partial<JobFile>>
}

export function newJobId(): string {
  return `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`
}

export function progressOf(job: JobRecord, startedAt?: number): JobProgress {
  let bytes = 0
  let bytesDone = 0
  let filesDone = 0
  let filesFailed = 0
  for (const f of job.files) {
    bytes += f.size ?? 0
    if (f.status === 'ok') {
      filesDone++
      bytesDone += f.size ?? 0
    } else if (f.status === 'failed') filesFailed++
  }
  const secs = startedAt ? (Date.now() - startedAt) / 1000 : 0
  return {
    id: job.id,
    state: job.state,
    files: job.files.length,
    filesDone,
    filesFailed,
    bytes,
    bytesDone,
    rate: secs > 0 ? bytesDone / secs : 0,
    ...(job.message ? { message: job.message } : {}),
  }
}

interface Running {
  abort: AbortController
  startedAt: number
  /** Bytes of files still in progress, for smooth progress. */
  partial: number
}

export class JobManager extends EventEmitter {
  private dir: string
  private jobs = new Map<string, JobRecord>()
  private runners = new Map<string, JobRunner<unknown>>()
  private running = new Map<string, Running>()
  private saveTimers = new Map<string, NodeJS.Timeout>()
  /** Per job, the write in progress: writes of one job are chained so they land in order. */
  private writes = new Map<string, Promise<void>>()
  private closing = false

  constructor(stateDir: string) {
    super()
    this.dir = join(stateDir, 'jobs')
    ensureOwnDirSync(this.dir)
  }

  register<Spec>(runner: JobRunner<Spec>): void {
    this.runners.set(runner.kind, runner as JobRunner<unknown>)
  }

  /** Loads jobs from the state dir; unfinished ones start again (resume). */
  resume(): void {
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith('.json')) continue
      let job: JobRecord
      try {
        job = JSON.parse(readFileSync(join(this.dir, name), 'utf8')) as JobRecord
      } catch (err) {
        log.warn('unreadable job record ignored', { file: name, error: (err as Error).message })
        continue
      }
      this.jobs.set(job.id, job)
      if (job.state === 'running' || job.state === 'queued') {
        log.info('resuming job after restart', { id: job.id, kind: job.kind, pending: job.files.filter((f) => f.status !== 'ok').length })
        job.state = 'queued'
        for (const f of job.files) if (f.status === 'failed') f.status = 'pending'
        this.start(job)
      }
    }
  }

  /** Adds a job and starts it. */
  submit<Spec>(kind: string, spec: Spec, files: JobFile[]): JobRecord<Spec> {
    if (!this.runners.has(kind)) throw new Error(`no runner for job kind ${kind}`)
    const now = new Date().toISOString()
    const job: JobRecord<Spec> = { id: newJobId(), kind, spec, state: 'queued', createdAt: now, updatedAt: now, files }
    this.jobs.set(job.id, job)
    void this.saveNow(job)
    this.start(job)
    return job
  }

  get(id: string): JobRecord | undefined {
    return this.jobs.get(id)
  }

  list(): JobRecord[] {
    return [...this.jobs.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt))
  }

  progress(id: string): JobProgress | undefined {
    const job = this.jobs.get(id)
    if (!job) return undefined
    const r = this.running.get(id)
    const p = progressOf(job, r?.startedAt)
    if (r) p.bytesDone += r.partial
    return p
  }

  cancel(id: string): boolean {
    const job = this.jobs.get(id)
    if (!job || (job.state !== 'running' && job.state !== 'queued')) return false
    job.state = 'cancelled'
    job.message = 'cancelled'
    this.running.get(id)?.abort.abort()
    void this.saveNow(job)
    return true
  }

  /** Forgets a finished job and its record. */
  remove(id: string): boolean {
    const job = this.jobs.get(id)
    if (!job || job.state === 'running' || job.state === 'queued') return false
    this.jobs.delete(id)
    rmSync(join(this.dir, `${id}.json`), { force: true })
    return true
  }

  private start(job: JobRecord): void {
    const runner = this.runners.get(job.kind)!
    const abort = new AbortController()
    const r: Running = { abort, startedAt: Date.now(), partial: 0 }
    this.running.set(job.id, r)
    job.state = 'running'
    this.save(job)
    const queue = job.files.filter((f) => f.status === 'pending')
    const worker = async () => {
      for (let f = queue.shift(); f && !abort.signal.aborted; f = queue.shift()) {
        let partial = 0
        try {
          const done = await runner.runFile(job, f, abort.signal, (n) => {
            partial += n
            r.partial += n
          })
          if (abort.signal.aborted) break
          Object.assign(f, done, { status: 'ok' as const })
          delete f.message
        } catch (err) {
          if (abort.signal.aborted) break
          f.status = 'failed'
          f.message = (err as Error).message
        } finally {
          r.partial -= partial
        }
        job.updatedAt = new Date().toISOString()
        this.save(job)
        this.emit('progress', job)
      }
    }
    void Promise.all(Array.from({ length: Math.max(1, runner.parallelism) }, worker)).then(() => {
      this.running.delete(job.id)
      // A daemon shutting down leaves the job 'running' on disk, to be resumed at the next start.
      if (this.closing) return
      if (job.state === 'running') {
        const failed = job.files.filter((f) => f.status === 'failed').length
        job.state = failed ? 'failed' : 'done'
        if (failed) job.message = `${failed} of ${job.files.length} files failed`
      }
      job.updatedAt = new Date().toISOString()
      void this.saveNow(job)
      this.emit('done', job)
      log.info('job finished', { id: job.id, kind: job.kind, state: job.state, files: job.files.length })
    })
  }

  /** Writes the job soon (at most twice a second per job). */
  private save(job: JobRecord): void {
    if (this.saveTimers.has(job.id)) return
    this.saveTimers.set(
      job.id,
      setTimeout(() => void this.saveNow(job), 500),
    )
  }

  /** Writes the job's record now (atomically: temp file, then rename), after any earlier write. */
  private saveNow(job: JobRecord): Promise<void> {
    clearTimeout(this.saveTimers.get(job.id))
    this.saveTimers.delete(job.id)
    const file = join(this.dir, `${job.id}.json`)
    const text = JSON.stringify(job)
    const p = (this.writes.get(job.id) ?? Promise.resolve())
      .then(() => writeFileAtomic(file, text, { mode: 0o600 }))
      .catch((err: Error) => log.error('cannot write job record', { id: job.id, error: err.message }))
    this.writes.set(job.id, p)
    return p
  }

  /** Stops running jobs without changing their recorded state, so the next start resumes them. */
  async close(): Promise<void> {
    this.closing = true
    for (const r of this.running.values()) r.abort.abort()
    await Promise.all([...this.jobs.values()].map((job) => this.saveNow(job)))
  }
}
