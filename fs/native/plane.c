/* The request loop: worker threads read requests off /dev/fuse (a cloned descriptor each where the
 * device can be cloned) and answer what needs no JavaScript: lookups, getattrs and directory pages
 * whose facts are known, opens of complete verified files (with passthrough where the kernel and our
 * privileges allow), and reads of blocks that are present and verified (pread from the cache file).
 * Everything else becomes a job for the JavaScript thread and a pending request, answered by
 * JavaScript or, if it never answers, by the backstop thread with EIO. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "plane.h"

#define MAX_WRITE (1u << 20)
#define MAX_PAGES 256
/* A request buffer must hold the largest write the kernel may send plus its headers. */
#define IN_BUF_SIZE (MAX_WRITE + 8192)
#define OUT_BUF_SIZE (MAX_WRITE + 4096)

uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void count_reply_error(plane *p, int err) {
  /* ENOENT: the request was interrupted and the kernel no longer waits; not our fault. */
  if (err != ENOENT) __atomic_fetch_add(&p->c.reply_errors, 1, __ATOMIC_RELAXED);
}

int reply_buf(plane *p, int fd, uint64_t unique, const void *a, size_t alen, const void *b, size_t blen) {
  struct fuse_out_header h = { .len = (uint32_t)(sizeof h + alen + blen), .error = 0, .unique = unique };
  struct iovec iov[3] = { { &h, sizeof h }, { (void *)a, alen }, { (void *)b, blen } };
  int cnt = 1 + (alen > 0) + (blen > 0);
  if (alen == 0 && blen > 0) iov[1] = iov[2];
  ssize_t n = writev(fd, iov, cnt);
  if (n < 0) { count_reply_error(p, errno); return -errno; }
  return 0;
}

int reply_err(plane *p, int fd, uint64_t unique, int err) {
  struct fuse_out_header h = { .len = sizeof h, .error = -err, .unique = unique };
  if (write(fd, &h, sizeof h) < 0) { count_reply_error(p, errno); return -errno; }
  return 0;
}

static void send_job(plane *p, job *j) {
  __atomic_fetch_add(&p->c.js_dispatch, 1, __ATOMIC_RELAXED);
  p->dispatch(p, j);
}

static job *new_job(int op, uint64_t req) {
  job *j = calloc(1, sizeof *j);
  if (!j) abort();
  j->op = op;
  j->req = req;
  return j;
}

void fill_entry(plane *p, node *n, struct fuse_entry_out *e) {
  memset(e, 0, sizeof *e);
  e->nodeid = n->id;
  e->generation = 1;
  e->entry_valid = p->entry_timeout;
  e->attr_valid = p->attr_timeout;
  node_attr(p, n, &e->attr);
}

/* One page of a directory from its listing: ".", "..", then the listing's entries. Offsets are entry
 * positions (the offset of an entry is the position of the next one). With `plus`, each entry whose
 * facts are known carries its node (one kernel lookup counted); unknown ones carry node id 0 and the
 * kernel looks them up. Called with the lock held. */
size_t dir_page(plane *p, node *dir, uint64_t offset, uint32_t size, int plus, char *out) {
  listing *l = dir->listing;
  uint64_t total = 2 + (l ? l->n : 0);
  size_t used = 0;
  for (uint64_t k = offset; k < total; k++) {
    const char *name;
    size_t len;
    int kind;
    const lentry *le = NULL;
    if (k < 2) { name = k == 0 ? "." : ".."; len = k + 1; kind = K_DIR; }
    else { le = &l->e[k - 2]; name = l->names + le->name_off; len = le->name_len; kind = le->kind; }
    size_t rec = plus ? FUSE_DIRENT_ALIGN(offsetof(struct fuse_direntplus, dirent.name) + len)
                      : FUSE_DIRENT_ALIGN(offsetof(struct fuse_dirent, name) + len);
    if (used + rec > size) break;
    struct fuse_dirent *d;
    if (plus) {
      struct fuse_direntplus *dp = (struct fuse_direntplus *)(out + used);
      memset(dp, 0, rec);
      if (le && le->kind != K_UNKNOWN) {
        node *c = node_make(p, dir, name, len, le->kind, le->size, le->mtime_ms, le->flags);
        c->nlookup++;
        fill_entry(p, c, &dp->entry_out);
      }
      d = &dp->dirent;
    } else {
      d = (struct fuse_dirent *)(out + used);
      memset(d, 0, rec);
    }
    d->ino = k == 0 ? dir->ino : k == 1 ? (dir->parent ? dir->parent->ino : dir->ino) : child_ino(dir->ino, name, len);
    d->off = k + 1;
    d->namelen = (uint32_t)len;
    d->type = kind == K_DIR ? 4 : kind == K_LINK ? 10 : 8;
    memcpy(d->name, name, len);
    used += rec;
  }
  return used;
}

/* Answers an open of a file JavaScript (or an earlier open) attached a cache state to. A complete,
 * verified file opens in passthrough where the connection allows it and no open of the same inode
 * uses the page-cache mode (the kernel refuses to mix the two on one inode); an inode with
 * passthrough opens keeps using its one backing file. Called with the lock held. */
void answer_open(plane *p, int fd, uint64_t unique, node *n, fstate *f) {
  int pt = 0;
  if (n->pt_opens > 0) pt = 1;
  else if (f && p->passthrough && !p->passthrough_failed && n->cached_opens == 0 && f->size > 0 && fstate_has(f, 0, f->size)) {
    int dfd = fstate_fd(f);
    if (dfd >= 0) {
      struct desfs_backing_map map = { .fd = dfd, .flags = 0, .padding = 0 };
      int id = ioctl(p->devfd, FUSE_DEV_IOC_BACKING_OPEN, &map);
      if (id > 0) { n->backing_id = id; pt = 1; }
      else {
        p->passthrough_failed = 1;
        snprintf(p->passthrough_why, sizeof p->passthrough_why, "the kernel refused a backing file (%s): reads use pread from the cache", strerror(errno));
      }
    }
  }
  handle *h = handle_add(p, n, f, pt);
  if (pt) { n->pt_opens++; __atomic_fetch_add(&p->c.passthrough_open, 1, __ATOMIC_RELAXED); }
  else n->cached_opens++;
  /* The kernel refuses passthrough opens with page-cache flags (only PASSTHROUGH, DIRECT_IO,
   * PARALLEL_DIRECT_WRITES and NOFLUSH may go with it): the backing file has its own page cache. */
  struct desfs_open_out o = { .fh = h->fh, .open_flags = pt ? FOPEN_PASSTHROUGH | FOPEN_NOFLUSH : FOPEN_KEEP_CACHE, .backing_id = pt ? n->backing_id : 0 };
  reply_buf(p, fd, unique, &o, sizeof o, NULL, 0);
}

static void release_handle(plane *p, handle *h) {
  node *n = h->node;
  if (h->passthrough) {
    if (--n->pt_opens == 0 && n->backing_id > 0) {
      uint32_t id = (uint32_t)n->backing_id;
      ioctl(p->devfd, FUSE_DEV_IOC_BACKING_CLOSE, &id);
      n->backing_id = 0;
    }
  } else n->cached_opens--;
  handle_remove(p, h);
}

/* ---- request handlers (worker threads) ---- */

typedef struct wctx {
  plane *p;
  int fd;
  char *in;
  char *out;
} wctx;

static int is_write_op(uint32_t op) {
  switch (op) {
  case FUSE_SETATTR: case FUSE_MKNOD: case FUSE_MKDIR: case FUSE_UNLINK: case FUSE_RMDIR:
  case FUSE_RENAME: case FUSE_RENAME2: case FUSE_LINK: case FUSE_SYMLINK: case FUSE_CREATE:
  case FUSE_WRITE: case FUSE_SETXATTR: case FUSE_REMOVEXATTR: case FUSE_FALLOCATE:
  case FUSE_COPY_FILE_RANGE: case FUSE_TMPFILE:
    return 1;
  default:
    return 0;
  }
}

static const char XATTR_NAMES_ADLER[] = "user.desfs.url\0user.desfs.adler32\0user.desfs.cached";
static const char XATTR_NAMES[] = "user.desfs.url\0user.desfs.cached";

static void handle_request(wctx *w, struct fuse_in_header *in, const char *arg, size_t arglen) {
  plane *p = w->p;
  int fd = w->fd;
  uint64_t unique = in->unique;
  uint32_t op = in->opcode;

  if (is_write_op(op)) { reply_err(p, fd, unique, EROFS); return; }

  switch (op) {
  case FUSE_LOOKUP: {
    size_t len = strnlen(arg, arglen);
    pthread_mutex_lock(&p->lock);
    node *dir = node_by_id(p, in->nodeid);
    if (!dir || dir->kind != K_DIR) { pthread_mutex_unlock(&p->lock); reply_err(p, fd, unique, dir ? ENOTDIR : ENOENT); return; }
    node *c = node_child(p, dir, arg, len);
    if (!c && dir->listing) {
      const lentry *le = listing_find(dir->listing, arg, len);
      if (!le && !is_control_name(p, dir, arg, len)) { pthread_mutex_unlock(&p->lock); reply_err(p, fd, unique, ENOENT); __atomic_fetch_add(&p->c.native_lookup, 1, __ATOMIC_RELAXED); return; }
      if (le && le->kind != K_UNKNOWN) c = node_make(p, dir, arg, len, le->kind, le->size, le->mtime_ms, le->flags);
    }
    if (c) {
      struct fuse_entry_out e;
      c->nlookup++;
      fill_entry(p, c, &e);
      pthread_mutex_unlock(&p->lock);
      __atomic_fetch_add(&p->c.native_lookup, 1, __ATOMIC_RELAXED);
      reply_buf(p, fd, unique, &e, sizeof e, NULL, 0);
      return;
    }
    pending *r = pending_add(p, unique, fd, op, now_ms());
    r->nodeid = in->nodeid;
    r->name = strndup(arg, len);
    if (!r->name) abort();
    r->name_len = len;
    job *j = new_job(JS_LOOKUP, r->req);
    j->path = node_path(dir, arg, len);
    pthread_mutex_unlock(&p->lock);
    send_job(p, j);
    return;
  }

  case FUSE_FORGET: {
    const struct fuse_forget_in *f = (const void *)arg;
    pthread_mutex_lock(&p->lock);
    node *n = node_by_id(p, in->nodeid);
    if (n) node_forget(p, n, f->nlookup);
    pthread_mutex_unlock(&p->lock);
    __atomic_fetch_add(&p->c.forgets, 1, __ATOMIC_RELAXED);
    return; /* no reply */
  }

  case FUSE_BATCH_FORGET: {
    const struct fuse_batch_forget_in *b = (const void *)arg;
    const struct fuse_forget_one *one = (const void *)(b + 1);
    size_t max = (arglen - sizeof *b) / sizeof *one;
    pthread_mutex_lock(&p->lock);
    for (uint32_t i = 0; i < b->count && i < max; i++) {
      node *n = node_by_id(p, one[i].nodeid);
      if (n) node_forget(p, n, one[i].nlookup);
    }
    pthread_mutex_unlock(&p->lock);
    __atomic_fetch_add(&p->c.forgets, b->count, __ATOMIC_RELAXED);
    return;
  }

  case FUSE_GETATTR: {
    struct fuse_attr_out o;
    memset(&o, 0, sizeof o);
    pthread_mutex_lock(&p->lock);
    node *n = node_by_id(p, in->nodeid);
    if (n) node_attr(p, n, &o.attr);
    pthread_mutex_unlock(&p->lock);
    if (!n) { reply_err(p, fd, unique, ENOENT); return; }
    o.attr_valid = p->attr_timeout;
    __atomic_fetch_add(&p->c.native_getattr, 1, __ATOMIC_RELAXED);
    reply_buf(p, fd, unique, &o, sizeof o, NULL, 0);
    return;
  }

  case FUSE_OPENDIR: {
    /* The kernel may cache directory pages: the tree changes only on a reload, which invalidates.
     * Not under the control directory, whose listings follow the user's recipes. */
    pthread_mutex_lock(&p->lock);
    node *n = node_by_id(p, in->nodeid);
    int control = n && node_in_control(p, n);
    pthread_mutex_unlock(&p->lock);
    struct desfs_open_out o = { .fh = 0, .open_flags = control ? 0 : FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR, .backing_id = 0 };
    reply_buf(p, fd, unique, &o, sizeof o, NULL, 0);
    return;
  }

  case FUSE_RELEASEDIR:
    reply_err(p, fd, unique, 0);
    return;

  case FUSE_READDIR:
  case FUSE_READDIRPLUS: {
    const struct fuse_read_in *r = (const void *)arg;
    uint32_t size = r->size > OUT_BUF_SIZE ? OUT_BUF_SIZE : r->size;
    pthread_mutex_lock(&p->lock);
    node *dir = node_by_id(p, in->nodeid);
    if (!dir || dir->kind != K_DIR) { pthread_mutex_unlock(&p->lock); reply_err(p, fd, unique, dir ? ENOTDIR : ENOENT); return; }
    if (dir->listing) {
      size_t used = dir_page(p, dir, r->offset, size, op == FUSE_READDIRPLUS, w->out);
      pthread_mutex_unlock(&p->lock);
      __atomic_fetch_add(&p->c.native_readdir, 1, __ATOMIC_RELAXED);
      reply_buf(p, fd, unique, w->out, used, NULL, 0);
      return;
    }
    pending *pr = pending_add(p, unique, fd, op, now_ms());
    pr->nodeid = in->nodeid;
    pr->offset = r->offset;
    pr->size = size;
    job *j = new_job(JS_READDIR, pr->req);
    j->path = node_path(dir, NULL, 0);
    pthread_mutex_unlock(&p->lock);
    send_job(p, j);
    return;
  }

  case FUSE_OPEN: {
    const struct fuse_open_in *o = (const void *)arg;
    if ((o->flags & O_ACCMODE) != O_RDONLY || (o->flags & O_TRUNC)) { reply_err(p, fd, unique, EROFS); return; }
    pthread_mutex_lock(&p->lock);
    node *n = node_by_id(p, in->nodeid);
    if (!n) { pthread_mutex_unlock(&p->lock); reply_err(p, fd, unique, ENOENT); return; }
    if (n->kind == K_DIR) { pthread_mutex_unlock(&p->lock); reply_err(p, fd, unique, EISDIR); return; }
    fstate *f = n->file;
    if (f && f->dead) { n->file = NULL; fstate_unref(p, f); f = NULL; }
    if (n->pt_opens > 0 || (f && fstate_has(f, 0, f->size))) {
      /* Complete and verified (or already open in passthrough): answered here; JavaScript hears of
       * it afterwards, so it can count the file as in use and refresh its LRU position. The news
       * goes out before the lock is let go: the kernel may release the handle as soon as it has the
       * answer, and that release (sent by another worker once it gets the lock) must reach
       * JavaScript after the open, or JavaScript would hold the file in use for ever. */
      answer_open(p, fd, unique, n, f);
      job *j = new_job(JS_OPENED, 0);
      j->fh = p->next_fh - 1;
      j->file_id = f ? f->id : 0;
      j->path = node_path(n, NULL, 0);
      send_job(p, j);
      pthread_mutex_unlock(&p->lock);
      __atomic_fetch_add(&p->c.native_open, 1, __ATOMIC_RELAXED);
      return;
    }
    pending *r = pending_add(p, unique, fd, op, now_ms());
    r->nodeid = in->nodeid;
    r->flags = o->flags;
    job *j = new_job(JS_OPEN, r->req);
    j->path = node_path(n, NULL, 0);
    pthread_mutex_unlock(&p->lock);
    send_job(p, j);
    return;
  }

  case FUSE_READ: {
    const struct fuse_read_in *r = (const void *)arg;
    uint32_t size = r->size > MAX_WRITE ? MAX_WRITE : r->size;
    pthread_mutex_lock(&p->lock);
    handle *h = handle_get(p, r->fh);
    if (!h) { pthread_mutex_unlock(&p->lock); reply_err(p, fd, unique, EBADF); return; }
    fstate *f = h->file;
    if (f) fstate_ref(f);
    uint64_t fsize = h->node->size;
    /* A read that enters a new step of the file: JavaScript's read-ahead hears of it (below). */
    int new_step = p->seen_step && r->offset + size > h->seen_to;
    if (new_step) h->seen_to = ((r->offset + size) / p->seen_step + 1) * p->seen_step;
    pthread_mutex_unlock(&p->lock);
    if (r->offset >= fsize) {
      if (f) { pthread_mutex_lock(&p->lock); fstate_unref(p, f); pthread_mutex_unlock(&p->lock); }
      reply_buf(p, fd, unique, NULL, 0, NULL, 0);
      return;
    }
    if (r->offset + size > fsize) size = (uint32_t)(fsize - r->offset);
    if (f && fstate_has(f, r->offset, size)) {
      int dfd = fstate_fd(f);
      size_t got = 0;
      while (dfd >= 0 && got < size) {
        ssize_t n = pread(dfd, w->out + got, size - got, (off_t)(r->offset + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
      }
      /* Checked again after the read: a block dropped meanwhile (failed check, eviction) is not
       * served from bytes that may have been read before it was dropped. */
      int ok = got == size && fstate_has(f, r->offset, size);
      int tell = ok && new_step && fstate_missing(f, r->offset + size, p->seen_ahead);
      pthread_mutex_lock(&p->lock);
      fstate_unref(p, f);
      pthread_mutex_unlock(&p->lock);
      if (ok) {
        __atomic_fetch_add(&p->c.native_read, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&p->c.native_read_bytes, size, __ATOMIC_RELAXED);
        reply_buf(p, fd, unique, w->out, size, NULL, 0);
        if (tell) { /* news, not a request: not counted among those sent to JavaScript */
          job *j = new_job(JS_READ_SEEN, 0);
          j->fh = r->fh;
          j->offset = r->offset;
          j->size = size;
          p->dispatch(p, j);
        }
        return;
      }
      f = NULL;
    }
    pthread_mutex_lock(&p->lock);
    if (f) fstate_unref(p, f);
    pending *pr = pending_add(p, unique, fd, op, now_ms());
    pr->fh = r->fh;
    job *j = new_job(JS_READ, pr->req);
    j->fh = r->fh;
    j->offset = r->offset;
    j->size = size;
    pthread_mutex_unlock(&p->lock);
    send_job(p, j);
    return;
  }

  case FUSE_RELEASE: {
    const struct fuse_release_in *r = (const void *)arg;
    pthread_mutex_lock(&p->lock);
    handle *h = handle_get(p, r->fh);
    if (h) release_handle(p, h);
    pthread_mutex_unlock(&p->lock);
    reply_err(p, fd, unique, 0);
    if (h) { job *j = new_job(JS_RELEASED, 0); j->fh = r->fh; send_job(p, j); }
    return;
  }

  case FUSE_GETXATTR:
  case FUSE_LISTXATTR: {
    const struct fuse_getxattr_in *x = (const void *)arg;
    const char *name = (const char *)(x + 1);
    pthread_mutex_lock(&p->lock);
    node *n = node_by_id(p, in->nodeid);
    if (!n) { pthread_mutex_unlock(&p->lock); reply_err(p, fd, unique, ENOENT); return; }
    if (op == FUSE_LISTXATTR) {
      const char *names = n->kind == K_FILE ? (n->flags & F_ADLER ? XATTR_NAMES_ADLER : XATTR_NAMES) : "";
      size_t len = n->kind == K_FILE ? (n->flags & F_ADLER ? sizeof XATTR_NAMES_ADLER : sizeof XATTR_NAMES) : 0;
      pthread_mutex_unlock(&p->lock);
      if (x->size == 0) { struct fuse_getxattr_out o = { .size = (uint32_t)len }; reply_buf(p, fd, unique, &o, sizeof o, NULL, 0); }
      else if (x->size < len) reply_err(p, fd, unique, ERANGE);
      else reply_buf(p, fd, unique, names, len, NULL, 0);
      return;
    }
    /* Only user.desfs.* exist. "Not supported" for the rest makes ls stop asking for ACLs and labels. */
    if (strncmp(name, "user.", 5) != 0) { pthread_mutex_unlock(&p->lock); reply_err(p, fd, unique, EOPNOTSUPP); return; }
    if (n->kind != K_FILE) { pthread_mutex_unlock(&p->lock); reply_err(p, fd, unique, ENODATA); return; }
    pending *r = pending_add(p, unique, fd, op, now_ms());
    r->size = x->size;
    job *j = new_job(JS_GETXATTR, r->req);
    j->path = node_path(n, NULL, 0);
    j->name = strdup(name);
    j->size = x->size;
    pthread_mutex_unlock(&p->lock);
    send_job(p, j);
    return;
  }

  case FUSE_READLINK: {
    pthread_mutex_lock(&p->lock);
    node *n = node_by_id(p, in->nodeid);
    if (!n || n->kind != K_LINK) { pthread_mutex_unlock(&p->lock); reply_err(p, fd, unique, n ? EINVAL : ENOENT); return; }
    pending *r = pending_add(p, unique, fd, op, now_ms());
    job *j = new_job(JS_READLINK, r->req);
    j->path = node_path(n, NULL, 0);
    pthread_mutex_unlock(&p->lock);
    send_job(p, j);
    return;
  }

  case FUSE_STATFS: {
    pthread_mutex_lock(&p->lock);
    pending *r = pending_add(p, unique, fd, op, now_ms());
    job *j = new_job(JS_STATFS, r->req);
    pthread_mutex_unlock(&p->lock);
    send_job(p, j);
    return;
  }

  case FUSE_FLUSH:
  case FUSE_FSYNC:
  case FUSE_FSYNCDIR:
    reply_err(p, fd, unique, 0);
    return;

  case FUSE_INTERRUPT:
    return; /* answered requests cannot be called back; the kernel waits for their answer */

  case FUSE_DESTROY:
    reply_err(p, fd, unique, 0);
    return;

  default:
    reply_err(p, fd, unique, ENOSYS);
    return;
  }
}

static void *worker_main(void *arg) {
  wctx *w = arg;
  plane *p = w->p;
  for (;;) {
    ssize_t n = read(w->fd, w->in, IN_BUF_SIZE);
    if (n < 0) {
      if (p->stopping) break;
      if (errno == EINTR || errno == EAGAIN || errno == ENOENT) continue;
      break; /* ENODEV: unmounted or aborted */
    }
    if (p->stopping && n == 0) break;
    if ((size_t)n < sizeof(struct fuse_in_header)) continue;
    struct fuse_in_header *in = (struct fuse_in_header *)w->in;
    if (in->len != (uint32_t)n) continue;
    handle_request(w, in, w->in + sizeof *in, (size_t)n - sizeof *in);
  }
  free(w->in);
  free(w->out);
  free(w);
  return NULL;
}

/* The backstop: a request JavaScript has not answered by its deadline gets EIO here, so no reader
 * waits forever on a stalled event loop. JavaScript's own, shorter deadline normally answers first. */
static void *reaper_main(void *arg) {
  plane *p = arg;
  while (!p->stopping) {
    struct timespec ts = { 0, 200 * 1000000 };
    nanosleep(&ts, NULL);
    for (;;) {
      pthread_mutex_lock(&p->lock);
      pending *r = pending_take_expired(p, now_ms());
      pthread_mutex_unlock(&p->lock);
      if (!r) break;
      reply_err(p, r->fd, r->unique, EIO);
      __atomic_fetch_add(&p->c.backstop, 1, __ATOMIC_RELAXED);
      job *j = new_job(JS_BACKSTOP, r->req);
      j->size = r->opcode;
      send_job(p, j);
      pending_free(r);
    }
  }
  return NULL;
}

/* INIT: read the kernel's offer and answer with what desfs wants of it. */
int plane_init_session(plane *p, char *err, size_t errlen) {
  char *buf = malloc(IN_BUF_SIZE);
  if (!buf) abort();
  ssize_t n;
  do n = read(p->devfd, buf, IN_BUF_SIZE); while (n < 0 && errno == EINTR);
  struct fuse_in_header *in = (struct fuse_in_header *)buf;
  if (n < (ssize_t)(sizeof *in + 16) || in->opcode != FUSE_INIT) {
    snprintf(err, errlen, "the kernel did not start the FUSE session (%s)", n < 0 ? strerror(errno) : "no INIT request");
    free(buf);
    return -1;
  }
  const struct fuse_init_in *ii = (const void *)(in + 1);
  if (ii->major != 7 || ii->minor < 31) {
    snprintf(err, errlen, "the kernel speaks FUSE %u.%u; desfs needs 7.31 or later (Linux 5.4+)", ii->major, ii->minor);
    reply_err(p, p->devfd, in->unique, EPROTO);
    free(buf);
    return -1;
  }
  uint64_t offered = ii->flags;
  if (offered & FUSE_INIT_EXT) offered |= (uint64_t)ii->flags2 << 32;
  uint64_t want = FUSE_ASYNC_READ | FUSE_DO_READDIRPLUS | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_CACHE_SYMLINKS | FUSE_INIT_EXT;
  p->proto_minor = ii->minor < DESFS_FUSE_MINOR ? ii->minor : DESFS_FUSE_MINOR;
  if (p->proto_minor >= 40 && (offered & FUSE_PASSTHROUGH) && p->passthrough) want |= FUSE_PASSTHROUGH;
  else if (p->passthrough) {
    p->passthrough = 0;
    snprintf(p->passthrough_why, sizeof p->passthrough_why, "the kernel offers no FUSE passthrough (needs Linux 6.9+ with CONFIG_FUSE_PASSTHROUGH): reads use pread from the cache");
  }
  uint64_t got = want & offered;
  if (!(got & FUSE_PASSTHROUGH)) p->passthrough = 0;
  struct desfs_init_out o;
  memset(&o, 0, sizeof o);
  o.major = 7;
  o.minor = p->proto_minor;
  o.max_readahead = ii->max_readahead; /* all the kernel offers; it can only lower the BDI's */
  o.flags = (uint32_t)got;
  o.flags2 = (uint32_t)(got >> 32);
  o.max_background = 64;
  o.congestion_threshold = 48;
  o.max_write = MAX_WRITE;
  o.time_gran = 1;
  o.max_pages = MAX_PAGES;
  /* A stack depth of 2 lets the cache dir live on overlayfs too (the kernel's maximum). */
  o.max_stack_depth = (got & FUSE_PASSTHROUGH) ? 2 : 0;
  p->max_readahead = ii->max_readahead;
  p->max_write = MAX_WRITE;
  size_t outlen = p->proto_minor >= 23 ? sizeof o : 24;
  int rc = reply_buf(p, p->devfd, in->unique, &o, outlen, NULL, 0);
  free(buf);
  if (rc < 0) { snprintf(err, errlen, "the kernel refused desfs's FUSE INIT answer (%s)", strerror(-rc)); return -1; }
  return 0;
}

int plane_start(plane *p, int nworkers, char *err, size_t errlen) {
  p->nworkers = nworkers;
  p->workers = calloc((size_t)nworkers, sizeof(pthread_t));
  p->worker_fds = calloc((size_t)nworkers, sizeof(int));
  if (!p->workers || !p->worker_fds) abort();
  for (int i = 0; i < nworkers; i++) {
    int fd = p->devfd;
    if (i > 0) {
      /* A cloned descriptor gives each worker its own queue of requests in processing. Without
       * access to /dev/fuse (not root) workers share the one descriptor, which works the same. */
      int c = open("/dev/fuse", O_RDWR | O_CLOEXEC);
      uint32_t master = (uint32_t)p->devfd;
      if (c >= 0 && ioctl(c, FUSE_DEV_IOC_CLONE, &master) == 0) fd = c;
      else if (c >= 0) close(c);
    }
    p->worker_fds[i] = fd;
    wctx *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->p = p;
    w->fd = fd;
    w->in = malloc(IN_BUF_SIZE);
    w->out = malloc(OUT_BUF_SIZE);
    if (!w->in || !w->out) abort();
    int rc = pthread_create(&p->workers[i], NULL, worker_main, w);
    if (rc) { snprintf(err, errlen, "cannot start FUSE worker threads (%s)", strerror(rc)); return -1; }
  }
  if (pthread_create(&p->reaper, NULL, reaper_main, p) == 0) p->reaper_started = 1;
  return 0;
}

static void wake(int sig) { (void)sig; }

/* Workers end when the connection goes away (unmount, or the last open file of a lazily unmounted
 * mount closed). One still waiting for a request is woken by a signal whose handler does nothing
 * (installed without SA_RESTART, so its read returns EINTR and it sees `stopping`). */
void plane_stop(plane *p) {
  p->stopping = 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = wake;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGRTMIN + 3, &sa, NULL);
  for (int i = 0; i < p->nworkers; i++) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    if (pthread_timedjoin_np(p->workers[i], NULL, &ts) == 0) continue;
    pthread_kill(p->workers[i], SIGRTMIN + 3);
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    if (pthread_timedjoin_np(p->workers[i], NULL, &ts) != 0) pthread_detach(p->workers[i]);
  }
  if (p->reaper_started) pthread_join(p->reaper, NULL);
  for (int i = 0; i < p->nworkers; i++)
    if (p->worker_fds[i] != p->devfd && p->worker_fds[i] >= 0) close(p->worker_fds[i]);
  p->nworkers = 0;
}

/* Notifications go through the main descriptor. They must never be sent from a request handler of
 * the same inode (the kernel may wait for that request): the binding sends them from a pool thread. */
int notify_inval_entry(plane *p, uint64_t parent, const char *name, size_t len) {
  struct fuse_out_header h = { .len = (uint32_t)(sizeof h + sizeof(struct fuse_notify_inval_entry_out) + len + 1), .error = FUSE_NOTIFY_INVAL_ENTRY, .unique = 0 };
  struct fuse_notify_inval_entry_out o = { .parent = parent, .namelen = (uint32_t)len, .flags = 0 };
  char nul = 0;
  struct iovec iov[4] = { { &h, sizeof h }, { &o, sizeof o }, { (void *)name, len }, { &nul, 1 } };
  return writev(p->devfd, iov, 4) < 0 ? -errno : 0;
}

int notify_inval_inode(plane *p, uint64_t ino) {
  struct fuse_out_header h = { .len = (uint32_t)(sizeof h + sizeof(struct fuse_notify_inval_inode_out)), .error = FUSE_NOTIFY_INVAL_INODE, .unique = 0 };
  struct fuse_notify_inval_inode_out o = { .ino = ino, .off = 0, .len = 0 };
  struct iovec iov[2] = { { &h, sizeof h }, { &o, sizeof o } };
  return writev(p->devfd, iov, 2) < 0 ? -errno : 0;
}
