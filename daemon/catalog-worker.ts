// Entry point of the worker thread that checks the metadata DB and builds the tree index
// (catalog.ts prepareInWorker), so the daemon's event loop, the mount and the control socket stay
// responsive through a multi-minute build.
import { parentPort, workerData } from 'node:worker_threads'
import { serveWorker } from './catalog.js'

if (parentPort && workerData?.desfsCatalog) serveWorker(parentPort, workerData.desfsCatalog)
