// Entry point of the child process that checks the metadata DB and builds the tree index
// (catalog.ts prepareInWorker): the daemon's event loop, the mount and the control socket stay
// responsive through a multi-minute build, and the build's memory goes with the process.
import { serveWorker } from './catalog.js'
import { exitWithParent } from '../parent-watch.js'

if (process.send && process.argv[2]) {
  const input = JSON.parse(process.argv[2]) as Parameters<typeof serveWorker>[1]
  // A daemon killed mid-build must not leave this process writing an index nobody will open.
  exitWithParent({ partial: { dir: input.stateDir, suffix: `.tmp-${process.pid}` } })
  serveWorker((m) => {
    // The outcome is the last message: once it is out, the channel closes and the process exits.
    const last = m.type !== 'progress'
    process.send!(m, undefined, {}, () => last && process.disconnect())
  }, input)
}
