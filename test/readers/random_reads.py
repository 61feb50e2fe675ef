#!/usr/bin/python3
# Random positioned reads through a desfs mount, each compared with the same bytes of the source file.
# Run by the cache tests in child processes: fixed seed, bounded count. Files are reopened now and then
# (so the daemon can evict them) and the kernel's page cache of the mounted file is dropped often
# (posix_fadvise DONTNEED), so reads keep reaching the daemon. Prints one JSON line of counts, with
# the bytes that differed from the source (wrongBytes) and the longest single open or pread (maxMs).
# usage: random_reads.py MOUNT SOURCE SEED COUNT MAXLEN FILE...
import errno, json, os, random, sys, time

mnt, src, seed, count, maxlen = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
files = sys.argv[6:]
rng = random.Random(seed)
BLOCK = 1 << 20
res = {'reads': 0, 'ok': 0, 'eio': 0, 'wrong': 0, 'short': 0,  # short: partial reads continued
       'bytes': 0, 'other': {}, 'firstWrong': None, 'wrongBytes': 0, 'maxMs': 0.0}
sizes = {f: os.path.getsize(os.path.join(src, f)) for f in files}
fds = {}

srcfds = {}

def timed(call, *args):
    # One system call on the mount, its duration kept if it is the longest yet (also when it fails).
    t0 = time.monotonic()
    try:
        return call(*args)
    finally:
        res['maxMs'] = max(res['maxMs'], (time.monotonic() - t0) * 1000)

def fd(f):
    # At most two mounted files open at once (a file in use cannot be evicted), reopened now and then.
    if f in fds and rng.random() < 0.1:
        os.close(fds.pop(f))
    if f not in fds:
        while len(fds) >= 2:
            os.close(fds.pop(next(iter(fds))))
        fds[f] = timed(os.open, os.path.join(mnt, f), os.O_RDONLY)
    if f not in srcfds:
        srcfds[f] = os.open(os.path.join(src, f), os.O_RDONLY)
    return fds[f], srcfds[f]

for i in range(count):
    f = rng.choice(files)
    size = sizes[f]
    kind = rng.random()
    if kind < 0.3 and size > BLOCK:  # straddle a block boundary
        b = rng.randrange(1, (size + BLOCK - 1) // BLOCK)
        off = max(0, b * BLOCK - rng.randrange(1, 4096))
    elif kind < 0.4:  # the end of the file, possibly past it
        off = max(0, size - rng.randrange(1, 8192))
    else:
        off = rng.randrange(0, size)
    ln = rng.randint(1, maxlen)
    res['reads'] += 1
    # A read that fails part-way returns what the kernel had before the error (a short count), as
    # with any file system; like a careful reader, ask again for the rest, which then fails or not.
    try:
        m, s = fd(f)
        got = timed(os.pread, m, ln, off)
        while 0 < len(got) < ln and off + len(got) < size:
            res['short'] += 1
            more = timed(os.pread, m, ln - len(got), off + len(got))
            if not more:
                break
            got += more
    except OSError as e:
        if e.errno == errno.EIO:
            res['eio'] += 1
        else:
            res['other'][str(e.errno)] = res['other'].get(str(e.errno), 0) + 1
        continue
    want = os.pread(s, ln, off)
    if got == want:
        res['ok'] += 1
        res['bytes'] += len(got)
    else:
        res['wrong'] += 1
        res['wrongBytes'] += sum(1 for x, y in zip(got, want) if x != y) + abs(len(got) - len(want))
        if res['firstWrong'] is None:
            res['firstWrong'] = {'file': f, 'off': off, 'len': ln}
    if i % 8 == 0:
        os.posix_fadvise(m, 0, 0, os.POSIX_FADV_DONTNEED)

print(json.dumps(res))
