/* The native FUSE plane's shared state: the node table the kernel's node ids refer to, directory
 * listings handed over from JavaScript, open files, cached files' presence maps, and requests
 * waiting for a JavaScript answer. One mutex (plane.lock) guards the tables; no system call is made
 * while holding it except the small reply writes of directory pages and opens, and the wake of the
 * JavaScript thread for an open answered here (plane.c says why). */
#ifndef DESFS_PLANE_H
#define DESFS_PLANE_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include "kernel.h"

enum kind { K_UNKNOWN = 0, K_FILE = 1, K_DIR = 2, K_LINK = 3 };
/* The control directory at the mount's root (fs/query-dirs.ts): found by name though absent from
 * the root's listing, and no listing under it is kept by the plane or the kernel's directory cache
 * (its contents follow the user's recipe files as well as the DB). */
#define CONTROL_NAME ".desfs"
#define CONTROL_LEN 6

/* Per-entry flags from JavaScript. */
#define F_ADLER 1 /* the archive's Adler-32 is known (user.desfs.adler32 exists) */

/* A cached file as JavaScript's block store sees it: bits[i] is 1 once block i is on disk and
 * verified. JavaScript writes the bytes (a Uint8Array over this memory); workers only read them. */
struct plane;
typedef struct fstate {
  struct plane *owner;
  uint32_t id;
  int refs;           /* under plane.lock: JS's handle, the ArrayBuffer, nodes and open handles */
  volatile int dead;  /* retired by JS (evicted or dropped): never served from again */
  uint64_t size;
  uint32_t block_size;
  uint32_t nblocks;
  uint8_t *bits;
  char *path;
  pthread_mutex_t fd_lock;
  int fd; /* read-only descriptor of the cache file, opened on first use */
  struct fstate *next;
} fstate;

typedef struct lentry {
  uint32_t name_off;
  uint16_t name_len;
  uint8_t kind;
  uint8_t flags;
  uint64_t size;
  int64_t mtime_ms;
} lentry;

/* A directory's children as JavaScript listed them, with a name index for lookups. */
typedef struct listing {
  uint32_t n;
  lentry *e;
  char *names;
  uint32_t *slots; /* open addressing: entry index + 1, 0 = empty */
  uint32_t nslots;
  uint64_t ino;                  /* the directory's inode number: a listing outlives its node */
  struct node *owner;            /* NULL while no node stands for the directory */
  struct listing *older, *newer; /* age list, for the memory bound */
  struct listing *next_ino;      /* hash chain by inode number */
} listing;

typedef struct node {
  uint64_t id;
  uint64_t ino;
  struct node *parent;
  char *name;
  uint16_t name_len;
  uint8_t kind;
  uint8_t flags;
  uint64_t size;
  int64_t mtime_ms;
  uint64_t nlookup;
  uint32_t children; /* live child nodes: a node outlives its children */
  uint32_t opens;
  int named;         /* reachable by (parent, name); cleared when the tree is reloaded */
  listing *listing;
  fstate *file;
  int backing_id;    /* > 0 while passthrough opens exist */
  uint32_t pt_opens, cached_opens;
  struct node *next_id, *next_name;
} node;

typedef struct handle {
  uint64_t fh;
  node *node;
  fstate *file;
  int passthrough;
  uint64_t seen_to; /* the end of the read-ahead step this handle's reads last told JavaScript of */
  struct handle *next;
} handle;

/* A request JavaScript must answer. `fd` is the device the request came from: the kernel matches a
 * reply only on that descriptor. */
typedef struct pending {
  uint64_t req;
  uint64_t unique;
  int fd;
  uint32_t opcode;
  uint64_t deadline_ms;
  uint64_t nodeid;
  uint64_t offset;
  uint32_t size;
  uint32_t flags;
  uint64_t fh;
  char *name; /* a lookup's name */
  size_t name_len;
  struct pending *next_hash, *older, *newer;
} pending;

/* What a worker hands to the JavaScript thread. */
typedef struct job {
  int op;
  uint64_t req;
  uint64_t fh;
  uint64_t offset;
  uint32_t size;
  uint32_t flags;
  uint32_t file_id;
  char *path;
  char *name;
} job;

/* Operations JavaScript sees (job.op). */
enum js_op { JS_LOOKUP = 1, JS_READDIR, JS_OPEN, JS_READ, JS_GETXATTR, JS_STATFS, JS_READLINK, JS_OPENED, JS_RELEASED, JS_BACKSTOP, JS_READ_SEEN };

typedef struct counters {
  uint64_t native_lookup, native_getattr, native_readdir, native_open, native_read, native_read_bytes;
  uint64_t passthrough_open, js_dispatch, backstop, reply_errors, forgets;
} counters;

struct plane;
typedef void (*dispatch_fn)(struct plane *p, job *j);

typedef struct plane {
  pthread_mutex_t lock;
  int devfd;
  int commfd;      /* fusermount3's socket (auto_unmount): closed only at unmount */
  int errfd;       /* fusermount3's stderr, kept open so it never gets SIGPIPE */
  char *mountpoint;
  unsigned dev_major, dev_minor;
  uint32_t uid, gid;
  int root_mount;  /* mounted with mount(2) by us (root) rather than by fusermount3 */
  uint32_t proto_minor;
  uint32_t max_write;
  uint32_t max_readahead;
  int passthrough; /* negotiated in INIT */
  int passthrough_failed; /* the backing ioctl was refused: use pread from now on */
  char passthrough_why[160];
  uint64_t entry_timeout, attr_timeout; /* seconds */
  int64_t mount_time_ms;
  uint64_t backstop_ms;
  /* Reads the plane serves itself are not seen by JavaScript's read-ahead, which would then start
   * only when a reader reaches a missing block, and wait there. So a read served here that enters a
   * new step (seen_step bytes) of its file, with a block missing within seen_ahead bytes after it,
   * is told to JavaScript (JS_READ_SEEN; no answer expected). 0: never. */
  uint64_t seen_step, seen_ahead;
  volatile int stopping;

  /* tables, under lock */
  node **by_id; size_t id_buckets, id_count;
  node **by_name; size_t name_buckets, name_count;
  handle **handles; size_t handle_buckets, handle_count;
  fstate *files; uint32_t next_file_id;
  pending **pend; size_t pend_buckets, pend_count;
  pending *pend_oldest, *pend_newest;
  listing *list_oldest, *list_newest; size_t listed_entries, listed_cap;
  listing **list_by_ino; size_t list_buckets, list_count;
  uint64_t next_id, next_fh, next_req;
  node *root;

  counters c;

  int nworkers;
  pthread_t *workers;
  int *worker_fds;
  pthread_t reaper;
  int reaper_started;

  dispatch_fn dispatch;
  void *js; /* binding's state */
} plane;

/* nodes.c */
void tables_init(plane *p);
void tables_free(plane *p);
node *node_by_id(plane *p, uint64_t id);
node *node_child(plane *p, node *parent, const char *name, size_t len);
uint64_t child_ino(uint64_t parent_ino, const char *name, size_t len);
node *node_make(plane *p, node *parent, const char *name, size_t len, int kind, uint64_t size, int64_t mtime_ms, int flags);
void node_forget(plane *p, node *n, uint64_t nlookup);
void node_release_if_unused(plane *p, node *n);
char *node_path(node *n, const char *child, size_t child_len);
void node_attr(plane *p, const node *n, struct fuse_attr *a);
void nodes_unname_all(plane *p);
int node_in_control(const plane *p, const node *n);
int is_control_name(const plane *p, const node *dir, const char *name, size_t len);
listing *listing_make(plane *p, node *dir, uint32_t n);
void listing_adopt(plane *p, node *dir);
void listing_index(listing *l);
const lentry *listing_find(const listing *l, const char *name, size_t len);
void listing_free(plane *p, listing *l);
void listings_free_all(plane *p);
handle *handle_add(plane *p, node *n, fstate *f, int passthrough);
handle *handle_get(plane *p, uint64_t fh);
void handle_remove(plane *p, handle *h);
fstate *fstate_new(plane *p, const char *path, uint64_t size, uint32_t block_size);
fstate *fstate_by_id(plane *p, uint32_t id);
void fstate_ref(fstate *f);
void fstate_unref(plane *p, fstate *f);
int fstate_fd(fstate *f);
int fstate_has(const fstate *f, uint64_t off, uint64_t len);
int fstate_missing(const fstate *f, uint64_t off, uint64_t len);
pending *pending_add(plane *p, uint64_t unique, int fd, uint32_t opcode, uint64_t now_ms);
pending *pending_take(plane *p, uint64_t req);
pending *pending_take_expired(plane *p, uint64_t now_ms);
void pending_free(pending *r);

/* plane.c */
int plane_init_session(plane *p, char *err, size_t errlen);
int plane_start(plane *p, int nworkers, char *err, size_t errlen);
void plane_stop(plane *p);
int reply_err(plane *p, int fd, uint64_t unique, int err);
int reply_buf(plane *p, int fd, uint64_t unique, const void *a, size_t alen, const void *b, size_t blen);
void fill_entry(plane *p, node *n, struct fuse_entry_out *e);
size_t dir_page(plane *p, node *dir, uint64_t offset, uint32_t size, int plus, char *out);
void answer_open(plane *p, int fd, uint64_t unique, node *n, fstate *f);
int notify_inval_entry(plane *p, uint64_t parent, const char *name, size_t len);
int notify_inval_inode(plane *p, uint64_t ino);
uint64_t now_ms(void);

/* mount.c */
int mount_fuse(plane *p, const char *mountpoint, int allow_other, char *err, size_t errlen);
void unmount_fuse(plane *p);

#endif
