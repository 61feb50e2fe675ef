// Runs the tree index build in a worker thread so the daemon's event loop (the mount, the control
// socket) stays responsive during a multi-minute build.
import { parentPort, Worker, workerData } from 'node:worker_threads'
import { buildTreeIndex, type BuildInput, type BuildProgress, type BuildResult } from './tree-build.js'

type Msg = { type: 'progress'; progress: BuildProgress } | { type: 'done'; result: BuildResult } | { type: 'error'; message: string }

if (parentPort && workerData?.desfsTreeBuild) {
  const port = parentPort
  const input = workerData.desfsTreeBuild as Omit<BuildInput, 'onProgress'>
  try {
    const result = buildTreeIndex({ ...input, onProgress: (progress) => port.postMessage({ type: 'progress', progress } satisfies Msg) })
    port.postMessage({ type: 'done', result } satisfies Msg)
  } catch (err) {
    port.postMessage({ type: 'error', message: (err as Error).message } satisfies Msg)
  }
}

/** Builds an index in a worker; resolves with the build result, rejects with the worker's error. */
export function buildInWorker(input: BuildInput): Promise<BuildResult> {
  const { onProgress, ...data } = input
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: { desfsTreeBuild: data } })
    let settled = false
    worker.on('message', (msg: Msg) => {
      if (msg.type === 'progress') onProgress?.(msg.progress)
      else if (msg.type === 'done') { settled = true; resolve(msg.result) }
      else { settled = true; reject(new Error(msg.message)) }
    })
    worker.on('error', (err) => { if (!settled) { settled = true; reject(err) } })
    worker.on('exit', (code) => { if (!settled) { settled = true; reject(new Error(`tree build worker exited with code ${code}`)) } })
  })
}
