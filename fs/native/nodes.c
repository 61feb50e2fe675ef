/* The plane's tables: nodes by id and by (parent, name), directory listings, open handles, cached
 * files' presence maps and requests waiting for JavaScript. Every function here expects plane.lock
 * held, except fstate_fd and fstate_has (a worker's read path), which touch only one fstate. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "plane.h"

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) abort(); /* out of memory: nothing sensible left to do in a request handler */
  return p;
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  return x;
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) { h ^= (unsigned char)s[i]; h *= 0x100000001b3ULL; }
  return h;
}

static size_t name_hash(uint64_t parent, const char *name, size_t len) {
  return (size_t)fnv1a(mix64(parent), name, len);
}

/* ---- growth: every table doubles when its load passes 1 ---- */

static void grow_id(plane *p) {
  size_t nb = p->id_buckets * 2;
  node **t = xcalloc(nb, sizeof *t);
  for (size_t i = 0; i < p->id_buckets; i++)
    for (node *n = p->by_id[i], *next; n; n = next) {
      next = n->next_id;
      size_t b = mix64(n->id) & (nb - 1);
      n->next_id = t[b]; t[b] = n;
    }
  free(p->by_id); p->by_id = t; p->id_buckets = nb;
}

static void grow_name(plane *p) {
  size_t nb = p->name_buckets * 2;
  node **t = xcalloc(nb, sizeof *t);
  for (size_t i = 0; i < p->name_buckets; i++)
    for (node *n = p->by_name[i], *next; n; n = next) {
      next = n->next_name;
      size_t b = name_hash(n->parent->id, n->name, n->name_len) & (nb - 1);
      n->next_name = t[b]; t[b] = n;
    }
  free(p->by_name); p->by_name = t; p->name_buckets = nb;
}

void tables_init(plane *p) {
  p->id_buckets = p->name_buckets = 1024;
  p->handle_buckets = 256;
  p->pend_buckets = 256;
  p->by_id = xcalloc(p->id_buckets, sizeof(node *));
  p->by_name = xcalloc(p->name_buckets, sizeof(node *));
  p->handles = xcalloc(p->handle_buckets, sizeof(handle *));
  p->pend = xcalloc(p->pend_buckets, sizeof(pending *));
  p->next_id = 2;
  p->next_fh = 1;
  p->next_req = 1;
  p->next_file_id = 1;
  if (!p->listed_cap) p->listed_cap = 4u << 20; /* entries kept in listings, about 150 MB at most */
  p->list_buckets = 1024;
  p->list_by_ino = xcalloc(p->list_buckets, sizeof(listing *));
  node *r = xcalloc(1, sizeof *r);
  r->id = FUSE_ROOT_ID;
  r->ino = FUSE_ROOT_ID;
  r->kind = K_DIR;
  r->name = xcalloc(1, 1);
  r->nlookup = 1;
  r->mtime_ms = p->mount_time_ms;
  p->root = r;
  size_t b = mix64(r->id) & (p->id_buckets - 1);
  r->next_id = p->by_id[b]; p->by_id[b] = r; p->id_count = 1;
}

node *node_by_id(plane *p, uint64_t id) {
  for (node *n = p->by_id[mix64(id) & (p->id_buckets - 1)]; n; n = n->next_id)
    if (n->id == id) return n;
  return NULL;
}

node *node_child(plane *p, node *parent, const char *name, size_t len) {
  for (node *n = p->by_name[name_hash(parent->id, name, len) & (p->name_buckets - 1)]; n; n = n->next_name)
    if (n->parent == parent && n->name_len == len && memcmp(n->name, name, len) == 0) return n;
  return NULL;
}

static void unname(plane *p, node *n) {
  if (!n->named) return;
  node **pp = &p->by_name[name_hash(n->parent->id, n->name, n->name_len) & (p->name_buckets - 1)];
  while (*pp && *pp != n) pp = &(*pp)->next_name;
  if (*pp) { *pp = n->next_name; p->name_count--; }
  n->named = 0;
  n->next_name = NULL;
}

/* A child's inode number: a hash of its path (its parent's number and its name), the same across
 * forgets and restarts, and the same in a listing as in the lookup that follows it. */
uint64_t child_ino(uint64_t parent_ino, const char *name, size_t len) {
  uint64_t ino = fnv1a(fnv1a(parent_ino ^ 0xcbf29ce484222325ULL, "/", 1), name, len);
  return ino <= FUSE_ROOT_ID ? ino + 2 : ino;
}

/* The node for a child, made (or found) with the facts JavaScript or a listing gave. Its inode
 * number is a hash of its path, so it is the same across forgets and restarts. */
node *node_make(plane *p, node *parent, const char *name, size_t len, int kind, uint64_t size, int64_t mtime_ms, int flags) {
  node *n = node_child(p, parent, name, len);
  if (n) return n;
  n = xcalloc(1, sizeof *n);
  n->id = p->next_id++;
  n->ino = child_ino(parent->ino, name, len);
  n->parent = parent;
  n->name = xcalloc(len + 1, 1);
  memcpy(n->name, name, len);
  n->name_len = (uint16_t)len;
  n->kind = (uint8_t)kind;
  n->flags = (uint8_t)flags;
  n->size = size;
  n->mtime_ms = mtime_ms;
  n->named = 1;
  parent->children++;
  if (p->id_count >= p->id_buckets) grow_id(p);
  size_t b = mix64(n->id) & (p->id_buckets - 1);
  n->next_id = p->by_id[b]; p->by_id[b] = n; p->id_count++;
  if (p->name_count >= p->name_buckets) grow_name(p);
  b = name_hash(parent->id, name, len) & (p->name_buckets - 1);
  n->next_name = p->by_name[b]; p->by_name[b] = n; p->name_count++;
  if (kind == K_DIR) listing_adopt(p, n);
  return n;
}

/* Frees a node nobody refers to (no kernel lookups, no children, no open handles), then its parent
 * if that was the parent's last reason to live. */
void node_release_if_unused(plane *p, node *n) {
  while (n && n != p->root && n->nlookup == 0 && n->children == 0 && n->opens == 0) {
    node *parent = n->parent;
    unname(p, n);
    node **pp = &p->by_id[mix64(n->id) & (p->id_buckets - 1)];
    while (*pp && *pp != n) pp = &(*pp)->next_id;
    if (*pp) { *pp = n->next_id; p->id_count--; }
    /* Its listing stays (within the bound) for the node the next lookup makes: the kernel forgets
     * nodes in bulk (memory pressure, echo 2), and asking JavaScript again for every directory of
     * a tree it already listed is what made `find` and cold `stat` slow. */
    if (n->listing) { n->listing->owner = NULL; n->listing = NULL; }
    if (n->file) fstate_unref(p, n->file);
    free(n->name);
    free(n);
    parent->children--;
    n = parent;
  }
}

void node_forget(plane *p, node *n, uint64_t nlookup) {
  n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
  node_release_if_unused(p, n);
}

/* "/a/b" (or "/a/b/child" with a child name): the path JavaScript's tree resolves. */
char *node_path(node *n, const char *child, size_t child_len) {
  size_t len = child ? child_len + 1 : 0;
  for (node *m = n; m && m->parent; m = m->parent) len += m->name_len + 1;
  char *s = xcalloc(len + 2, 1);
  size_t pos = len;
  if (child) { pos -= child_len; memcpy(s + pos, child, child_len); s[--pos] = '/'; }
  for (node *m = n; m && m->parent; m = m->parent) {
    pos -= m->name_len;
    memcpy(s + pos, m->name, m->name_len);
    s[--pos] = '/';
  }
  if (len == 0) s[0] = '/';
  return s;
}

void node_attr(plane *p, const node *n, struct fuse_attr *a) {
  memset(a, 0, sizeof *a);
  a->ino = n->ino;
  int64_t t = n->mtime_ms ? n->mtime_ms : p->mount_time_ms;
  a->atime = a->mtime = a->ctime = (uint64_t)(t / 1000);
  a->atimensec = a->mtimensec = a->ctimensec = (uint32_t)((t % 1000) * 1000000);
  a->uid = p->uid;
  a->gid = p->gid;
  /* Readers size their buffers by it (Python's buffered files, stdio): 32 KiB keeps a header read
   * (astropy reads 2880 bytes through a buffer this size) within one or two 32 KiB cache blocks;
   * sequential readers still reach the plane in requests as large as the mount's read-ahead, and
   * cat reads 128 KiB at a time whatever this says. */
  a->blksize = 32u << 10;
  switch (n->kind) {
  case K_DIR: a->mode = S_IFDIR | 0555; a->nlink = 2; a->size = 4096; break;
  case K_LINK: a->mode = S_IFLNK | 0777; a->nlink = 1; a->size = n->size; break;
  default: a->mode = S_IFREG | 0444; a->nlink = 1; a->size = n->size; break;
  }
  a->blocks = (a->size + 511) / 512;
}

/* The root's hidden control entry: JavaScript answers it, whatever the root's listing says. */
int is_control_name(const plane *p, const node *dir, const char *name, size_t len) {
  return dir == p->root && len == CONTROL_LEN && memcmp(name, CONTROL_NAME, CONTROL_LEN) == 0;
}

/* True for the control directory and everything under it. */
int node_in_control(const plane *p, const node *n) {
  const node *top = n;
  while (top && top->parent && top->parent != p->root) top = top->parent;
  return top && top->parent == p->root && is_control_name(p, p->root, top->name, top->name_len);
}

/* After a tree reload no old node may answer a lookup by name: the kernel looks names up again and
 * gets fresh nodes; the old ones live on by id for as long as the kernel holds them. */
void nodes_unname_all(plane *p) {
  for (size_t i = 0; i < p->id_buckets; i++)
    for (node *n = p->by_id[i]; n; n = n->next_id) unname(p, n);
}

/* ---- listings ---- */

static listing **ino_slot(plane *p, uint64_t ino) {
  listing **pp = &p->list_by_ino[mix64(ino) & (p->list_buckets - 1)];
  while (*pp && (*pp)->ino != ino) pp = &(*pp)->next_ino;
  return pp;
}

static void grow_listings(plane *p) {
  size_t nb = p->list_buckets * 2;
  listing **t = xcalloc(nb, sizeof *t);
  for (size_t i = 0; i < p->list_buckets; i++)
    for (listing *l = p->list_by_ino[i], *next; l; l = next) {
      next = l->next_ino;
      size_t b = mix64(l->ino) & (nb - 1);
      l->next_ino = t[b]; t[b] = l;
    }
  free(p->list_by_ino); p->list_by_ino = t; p->list_buckets = nb;
}

/* A directory node made again after the kernel forgot it takes back the listing it had. */
void listing_adopt(plane *p, node *dir) {
  listing *l = *ino_slot(p, dir->ino);
  if (!l || l->owner) return;
  l->owner = dir;
  dir->listing = l;
}

listing *listing_make(plane *p, node *dir, uint32_t n) {
  listing *l = xcalloc(1, sizeof *l);
  l->n = n;
  l->e = xcalloc(n, sizeof *l->e);
  l->ino = dir->ino;
  l->owner = dir;
  if (dir->listing) listing_free(p, dir->listing);
  listing *old = *ino_slot(p, dir->ino);
  if (old) listing_free(p, old);
  dir->listing = l;
  if (p->list_count >= p->list_buckets) grow_listings(p);
  listing **head = &p->list_by_ino[mix64(l->ino) & (p->list_buckets - 1)];
  l->next_ino = *head; *head = l; p->list_count++;
  l->older = p->list_newest;
  if (p->list_newest) p->list_newest->newer = l; else p->list_oldest = l;
  p->list_newest = l;
  p->listed_entries += n;
  /* The bound: the oldest listings go first (their directories are asked of JavaScript again). */
  while (p->listed_entries > p->listed_cap && p->list_oldest && p->list_oldest != l) listing_free(p, p->list_oldest);
  return l;
}

void listing_index(listing *l) {
  uint32_t ns = 16;
  while (ns < l->n * 2) ns *= 2;
  l->nslots = ns;
  l->slots = xcalloc(ns, sizeof *l->slots);
  for (uint32_t i = 0; i < l->n; i++) {
    size_t h = fnv1a(0xcbf29ce484222325ULL, l->names + l->e[i].name_off, l->e[i].name_len) & (ns - 1);
    while (l->slots[h]) h = (h + 1) & (ns - 1);
    l->slots[h] = i + 1;
  }
}

const lentry *listing_find(const listing *l, const char *name, size_t len) {
  if (!l->nslots) return NULL;
  size_t h = fnv1a(0xcbf29ce484222325ULL, name, len) & (l->nslots - 1);
  for (uint32_t s; (s = l->slots[h]); h = (h + 1) & (l->nslots - 1)) {
    const lentry *e = &l->e[s - 1];
    if (e->name_len == len && memcmp(l->names + e->name_off, name, len) == 0) return e;
  }
  return NULL;
}

void listing_free(plane *p, listing *l) {
  if (l->older) l->older->newer = l->newer; else p->list_oldest = l->newer;
  if (l->newer) l->newer->older = l->older; else p->list_newest = l->older;
  p->listed_entries -= l->n;
  listing **pp = ino_slot(p, l->ino);
  if (*pp == l) { *pp = l->next_ino; p->list_count--; }
  if (l->owner && l->owner->listing == l) l->owner->listing = NULL;
  free(l->e); free(l->names); free(l->slots); free(l);
}

void listings_free_all(plane *p) {
  while (p->list_oldest) listing_free(p, p->list_oldest);
}

/* ---- handles ---- */

handle *handle_add(plane *p, node *n, fstate *f, int passthrough) {
  handle *h = xcalloc(1, sizeof *h);
  h->fh = p->next_fh++;
  h->node = n;
  h->file = f;
  h->passthrough = passthrough;
  if (f) fstate_ref(f);
  n->opens++;
  if (p->handle_count >= p->handle_buckets) {
    size_t nb = p->handle_buckets * 2;
    handle **t = xcalloc(nb, sizeof *t);
    for (size_t i = 0; i < p->handle_buckets; i++)
      for (handle *x = p->handles[i], *next; x; x = next) { next = x->next; size_t b = mix64(x->fh) & (nb - 1); x->next = t[b]; t[b] = x; }
    free(p->handles); p->handles = t; p->handle_buckets = nb;
  }
  size_t b = mix64(h->fh) & (p->handle_buckets - 1);
  h->next = p->handles[b]; p->handles[b] = h; p->handle_count++;
  return h;
}

handle *handle_get(plane *p, uint64_t fh) {
  for (handle *h = p->handles[mix64(fh) & (p->handle_buckets - 1)]; h; h = h->next)
    if (h->fh == fh) return h;
  return NULL;
}

void handle_remove(plane *p, handle *h) {
  handle **pp = &p->handles[mix64(h->fh) & (p->handle_buckets - 1)];
  while (*pp && *pp != h) pp = &(*pp)->next;
  if (*pp) { *pp = h->next; p->handle_count--; }
  if (h->file) fstate_unref(p, h->file);
  node *n = h->node;
  n->opens--;
  free(h);
  node_release_if_unused(p, n);
}

/* ---- cached files ---- */

fstate *fstate_new(plane *p, const char *path, uint64_t size, uint32_t block_size) {
  fstate *f = xcalloc(1, sizeof *f);
  f->owner = p;
  f->id = p->next_file_id++;
  if (p->next_file_id == 0) p->next_file_id = 1;
  f->size = size;
  f->block_size = block_size;
  f->nblocks = (uint32_t)((size + block_size - 1) / block_size);
  f->bits = xcalloc(f->nblocks ? f->nblocks : 1, 1);
  f->path = strdup(path);
  if (!f->path) abort();
  f->fd = -1;
  pthread_mutex_init(&f->fd_lock, NULL);
  f->refs = 1; /* JavaScript's */
  f->next = p->files;
  p->files = f;
  return f;
}

fstate *fstate_by_id(plane *p, uint32_t id) {
  for (fstate *f = p->files; f; f = f->next)
    if (f->id == id) return f;
  return NULL;
}

void fstate_ref(fstate *f) { f->refs++; }

void fstate_unref(plane *p, fstate *f) {
  if (--f->refs > 0) return;
  fstate **pp = &p->files;
  while (*pp && *pp != f) pp = &(*pp)->next;
  if (*pp) *pp = f->next;
  if (f->fd >= 0) close(f->fd);
  pthread_mutex_destroy(&f->fd_lock);
  free(f->bits);
  free(f->path);
  free(f);
}

/* The cache file's read-only descriptor, opened once. Never follows a link: a cache file is a
 * regular file the block store made, or it is not served. */
int fstate_fd(fstate *f) {
  pthread_mutex_lock(&f->fd_lock);
  if (f->fd < 0) {
    int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) { close(fd); fd = -1; }
    f->fd = fd;
  }
  int fd = f->fd;
  pthread_mutex_unlock(&f->fd_lock);
  return fd;
}

/* True when every block of [off, off+len) is present and verified. */
int fstate_has(const fstate *f, uint64_t off, uint64_t len) {
  if (f->dead) return 0;
  if (len == 0 || f->nblocks == 0) return 1;
  uint64_t first = off / f->block_size, last = (off + len - 1) / f->block_size;
  if (last >= f->nblocks) last = f->nblocks - 1;
  for (uint64_t i = first; i <= last; i++)
    if (!__atomic_load_n(&f->bits[i], __ATOMIC_ACQUIRE)) return 0;
  return !f->dead;
}

/* True when a block of [off, off+len), clipped to the file, is not present (a hint, not a promise:
 * JavaScript sets bits meanwhile). */
int fstate_missing(const fstate *f, uint64_t off, uint64_t len) {
  if (len == 0 || off >= f->size) return 0;
  uint64_t first = off / f->block_size, last = (off + len - 1) / f->block_size;
  if (last >= f->nblocks) last = f->nblocks - 1;
  for (uint64_t i = first; i <= last; i++)
    if (!__atomic_load_n(&f->bits[i], __ATOMIC_RELAXED)) return 1;
  return 0;
}

/* ---- requests waiting for JavaScript ---- */

pending *pending_add(plane *p, uint64_t unique, int fd, uint32_t opcode, uint64_t now) {
  pending *r = xcalloc(1, sizeof *r);
  r->req = p->next_req++;
  r->unique = unique;
  r->fd = fd;
  r->opcode = opcode;
  r->deadline_ms = now + p->backstop_ms;
  if (p->pend_count >= p->pend_buckets) {
    size_t nb = p->pend_buckets * 2;
    pending **t = xcalloc(nb, sizeof *t);
    for (size_t i = 0; i < p->pend_buckets; i++)
      for (pending *x = p->pend[i], *next; x; x = next) { next = x->next_hash; size_t b = mix64(x->req) & (nb - 1); x->next_hash = t[b]; t[b] = x; }
    free(p->pend); p->pend = t; p->pend_buckets = nb;
  }
  size_t b = mix64(r->req) & (p->pend_buckets - 1);
  r->next_hash = p->pend[b]; p->pend[b] = r; p->pend_count++;
  /* Every request has the same backstop, so the age list is also deadline order. */
  r->older = p->pend_newest;
  if (p->pend_newest) p->pend_newest->newer = r; else p->pend_oldest = r;
  p->pend_newest = r;
  return r;
}

static void pending_unlink(plane *p, pending *r) {
  pending **pp = &p->pend[mix64(r->req) & (p->pend_buckets - 1)];
  while (*pp && *pp != r) pp = &(*pp)->next_hash;
  if (*pp) { *pp = r->next_hash; p->pend_count--; }
  if (r->older) r->older->newer = r->newer; else p->pend_oldest = r->newer;
  if (r->newer) r->newer->older = r->older; else p->pend_newest = r->older;
}

/* Takes a request out for answering; NULL when it was answered already (the backstop). */
pending *pending_take(plane *p, uint64_t req) {
  for (pending *r = p->pend[mix64(req) & (p->pend_buckets - 1)]; r; r = r->next_hash)
    if (r->req == req) { pending_unlink(p, r); return r; }
  return NULL;
}

pending *pending_take_expired(plane *p, uint64_t now) {
  pending *r = p->pend_oldest;
  if (!r || r->deadline_ms > now) return NULL;
  pending_unlink(p, r);
  return r;
}

void pending_free(pending *r) {
  free(r->name);
  free(r);
}

void tables_free(plane *p) {
  listings_free_all(p);
  for (size_t i = 0; i < p->handle_buckets; i++)
    for (handle *h = p->handles[i], *next; h; h = next) { next = h->next; free(h); }
  for (size_t i = 0; i < p->id_buckets; i++)
    for (node *n = p->by_id[i], *next; n; n = next) { next = n->next_id; free(n->name); free(n); }
  for (size_t i = 0; i < p->pend_buckets; i++)
    for (pending *r = p->pend[i], *next; r; r = next) { next = r->next_hash; pending_free(r); }
  /* fstates may still be referenced by JavaScript ArrayBuffers: those free themselves. */
  free(p->by_id); free(p->by_name); free(p->list_by_ino); free(p->handles); free(p->pend);
  p->by_id = p->by_name = NULL; p->handles = NULL; p->pend = NULL;
}
