/* The Node-API face of the plane: mount/unmount, the dispatch of jobs to one JavaScript function
 * through a thread-safe function, the reply calls JavaScript answers with, the presence maps of
 * cached files (Uint8Arrays over native memory), kernel notifications, SO_PEERCRED for the control
 * socket, and the cache's writes from pool threads (direct-write.c). A reply names its request
 * by number; a request the backstop already answered is gone from the table, so a late reply is
 * dropped and never touches freed memory. */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "plane.h"
#include "direct-write.h"

typedef struct js_state {
  napi_threadsafe_function tsfn;
} js_state;

#define CHECK(env, call)                                                   \
  do {                                                                     \
    if ((call) != napi_ok) {                                               \
      napi_throw_error((env), NULL, "desfs native: " #call " failed");     \
      return NULL;                                                         \
    }                                                                      \
  } while (0)

static void free_job(job *j) {
  free(j->path);
  free(j->name);
  free(j);
}

static napi_value num(napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}

static napi_value str_or_null(napi_env env, const char *s) {
  napi_value r;
  if (s) napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
  else napi_get_null(env, &r);
  return r;
}

/* On the JavaScript thread: dispatch(op, req, path, fh, offset, size, name, fileId). */
static void call_js(napi_env env, napi_value fn, void *ctx, void *data) {
  (void)ctx;
  job *j = data;
  if (env && fn) {
    napi_value args[8] = {
      num(env, j->op), num(env, (double)j->req), str_or_null(env, j->path), num(env, (double)j->fh),
      num(env, (double)j->offset), num(env, j->size), str_or_null(env, j->name), num(env, j->file_id),
    };
    napi_value undef;
    napi_get_undefined(env, &undef);
    napi_call_function(env, undef, fn, 8, args, NULL);
  }
  free_job(j);
}

static void dispatch(plane *p, job *j) {
  js_state *s = p->js;
  if (p->stopping || !s || napi_call_threadsafe_function(s->tsfn, j, napi_tsfn_nonblocking) != napi_ok) free_job(j);
}

/* ---- argument helpers ---- */

static plane *arg_plane(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "desfs native: not a plane");
    return NULL;
  }
  return p;
}

static double arg_num(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

static char *arg_str(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (!s) abort();
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

static int get_prop_num(napi_env env, napi_value obj, const char *name, double dflt, double *out) {
  napi_value v;
  bool has = false;
  napi_has_named_property(env, obj, name, &has);
  if (!has) { *out = dflt; return 0; }
  napi_get_named_property(env, obj, name, &v);
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_boolean) { bool b; napi_get_value_bool(env, v, &b); *out = b; return 0; }
  if (t != napi_number) { *out = dflt; return 0; }
  return napi_get_value_double(env, v, out) == napi_ok ? 0 : -1;
}

/* mount(mountpoint, options, dispatch) -> plane */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) { napi_throw_type_error(env, NULL, "mount(mountpoint, options, dispatch)"); return NULL; }
  char *mnt = arg_str(env, argv[0]);
  if (!mnt) { napi_throw_type_error(env, NULL, "mountpoint must be a string"); return NULL; }
  double allow_other, entry, attr, mtime, backstop, threads, passthrough, cap, uid, gid, seen_step, seen_ahead;
  get_prop_num(env, argv[1], "allowOther", 0, &allow_other);
  get_prop_num(env, argv[1], "entryTimeout", 3600, &entry);
  get_prop_num(env, argv[1], "attrTimeout", 86400, &attr);
  get_prop_num(env, argv[1], "mountTimeMs", 0, &mtime);
  get_prop_num(env, argv[1], "backstopMs", 60000, &backstop);
  get_prop_num(env, argv[1], "threads", 4, &threads);
  get_prop_num(env, argv[1], "passthrough", 1, &passthrough);
  get_prop_num(env, argv[1], "listingCap", 4 << 20, &cap);
  get_prop_num(env, argv[1], "uid", getuid(), &uid);
  get_prop_num(env, argv[1], "gid", getgid(), &gid);
  get_prop_num(env, argv[1], "readSeenStep", 0, &seen_step);
  get_prop_num(env, argv[1], "readSeenAhead", 0, &seen_ahead);

  plane *p = calloc(1, sizeof *p);
  if (!p) abort();
  pthread_mutex_init(&p->lock, NULL);
  p->devfd = p->commfd = p->errfd = -1;
  p->uid = (uint32_t)uid;
  p->gid = (uint32_t)gid;
  p->entry_timeout = (uint64_t)entry;
  p->attr_timeout = (uint64_t)attr;
  p->mount_time_ms = (int64_t)mtime;
  p->backstop_ms = (uint64_t)backstop;
  p->seen_step = seen_step > 0 ? (uint64_t)seen_step : 0;
  p->seen_ahead = seen_ahead > 0 ? (uint64_t)seen_ahead : 0;
  p->passthrough = passthrough != 0;
  if (!p->passthrough) snprintf(p->passthrough_why, sizeof p->passthrough_why, "passthrough turned off: reads use pread from the cache");
  else if (geteuid() != 0) {
    p->passthrough = 0;
    snprintf(p->passthrough_why, sizeof p->passthrough_why, "not root (passthrough needs CAP_SYS_ADMIN): reads use pread from the cache");
  }
  p->listed_cap = (size_t)cap;
  tables_init(p);

  char err[600] = "";
  if (mount_fuse(p, mnt, allow_other != 0, err, sizeof err) != 0 || plane_init_session(p, err, sizeof err) != 0) {
    unmount_fuse(p);
    if (p->devfd >= 0) close(p->devfd);
    free(mnt);
    tables_free(p);
    free(p->mountpoint);
    free(p);
    napi_throw_error(env, "EMOUNT", err);
    return NULL;
  }
  free(mnt);

  js_state *s = calloc(1, sizeof *s);
  if (!s) abort();
  napi_value name;
  napi_create_string_utf8(env, "desfs-fuse", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[2], NULL, name, 0, 1, NULL, NULL, p, call_js, &s->tsfn) != napi_ok) {
    napi_throw_error(env, NULL, "desfs native: cannot create the dispatch function");
    return NULL;
  }
  /* The control socket keeps the daemon alive; the mount alone should not. */
  napi_unref_threadsafe_function(env, s->tsfn);
  p->js = s;
  p->dispatch = dispatch;
  if (plane_start(p, threads < 1 ? 1 : threads > 64 ? 64 : (int)threads, err, sizeof err) != 0) {
    napi_throw_error(env, NULL, err);
    return NULL;
  }
  napi_value ext;
  CHECK(env, napi_create_external(env, p, NULL, NULL, &ext));
  return ext;
}

/* unmount(plane): unmounts, stops the workers. The plane's memory is kept: a worker that did not
 * stop in time (a reader holding the lazily detached mount) may still look at it. */
static napi_value js_unmount(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  plane *p = arg_plane(env, argv[0]);
  if (!p || p->stopping) return NULL;
  p->stopping = 1;
  unmount_fuse(p);
  plane_stop(p);
  js_state *s = p->js;
  if (s) napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
  p->js = NULL;
  return NULL;
}

/* Reads a reply call's arguments (plane, req, ...) and takes the pending request out for answering;
 * NULL (and nothing to do) when it was answered already, by the backstop. */
static pending *take(napi_env env, napi_callback_info info, size_t n, napi_value *argv, plane **pp) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  plane *p = arg_plane(env, argv[0]);
  if (!p) return NULL;
  *pp = p;
  uint64_t req = (uint64_t)arg_num(env, argv[1]);
  pthread_mutex_lock(&p->lock);
  pending *r = pending_take(p, req);
  pthread_mutex_unlock(&p->lock);
  return r;
}

static napi_value bool_val(napi_env env, int b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

/* replyErr(plane, req, errno) */
static napi_value js_reply_err(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  plane *p;
  pending *r = take(env, info, 3, argv, &p);
  if (!r) return bool_val(env, 0);
  reply_err(p, r->fd, r->unique, (int)arg_num(env, argv[2]));
  pending_free(r);
  return bool_val(env, 1);
}

/* replyEntry(plane, req, kind, size, mtimeMs, flags): the answer to a lookup; makes the node. */
static napi_value js_reply_entry(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  plane *p;
  pending *r = take(env, info, 6, argv, &p);
  if (!r) return bool_val(env, 0);
  int kind = (int)arg_num(env, argv[2]);
  uint64_t size = (uint64_t)arg_num(env, argv[3]);
  int64_t mtime = (int64_t)arg_num(env, argv[4]);
  int flags = (int)arg_num(env, argv[5]);
  struct fuse_entry_out e;
  pthread_mutex_lock(&p->lock);
  node *dir = node_by_id(p, r->nodeid);
  node *c = dir && r->name ? node_make(p, dir, r->name, r->name_len, kind, size, mtime, flags) : NULL;
  if (c) {
    c->nlookup++;
    fill_entry(p, c, &e);
  }
  pthread_mutex_unlock(&p->lock);
  if (c) reply_buf(p, r->fd, r->unique, &e, sizeof e, NULL, 0);
  else reply_err(p, r->fd, r->unique, ENOENT);
  pending_free(r);
  return bool_val(env, 1);
}

/* replyListing(plane, req, names[], kinds, sizes, mtimes, flags): a directory's children; kept for
 * later pages, lookups and readdirs. A readdir's page is served from it; so is a lookup of one of
 * them, which hands over its directory's children so the plane looks up the others itself. */
static napi_value js_reply_listing(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  plane *p;
  pending *r = take(env, info, 7, argv, &p);
  if (!r) return bool_val(env, 0);
  uint32_t n = 0;
  napi_get_array_length(env, argv[2], &n);
  void *kinds = NULL, *sizes = NULL, *mtimes = NULL, *flags = NULL;
  size_t kl = 0, sl = 0, ml = 0, fl = 0;
  napi_get_typedarray_info(env, argv[3], NULL, &kl, &kinds, NULL, NULL);
  napi_get_typedarray_info(env, argv[4], NULL, &sl, &sizes, NULL, NULL);
  napi_get_typedarray_info(env, argv[5], NULL, &ml, &mtimes, NULL, NULL);
  napi_get_typedarray_info(env, argv[6], NULL, &fl, &flags, NULL, NULL);
  if (kl < n || sl < n || ml < n || fl < n) {
    reply_err(p, r->fd, r->unique, EIO);
    pending_free(r);
    napi_throw_range_error(env, NULL, "replyListing: arrays shorter than the names");
    return NULL;
  }
  /* Names first into one blob (no lock held while JavaScript strings are read). */
  size_t cap = 4096, used = 0;
  char *blob = malloc(cap);
  uint32_t *offs = malloc(sizeof(uint32_t) * (n ? n : 1));
  uint16_t *lens = malloc(sizeof(uint16_t) * (n ? n : 1));
  if (!blob || !offs || !lens) abort();
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    napi_get_element(env, argv[2], i, &v);
    size_t len = 0;
    napi_get_value_string_utf8(env, v, NULL, 0, &len);
    if (len > 1024) len = 1024;
    while (used + len + 1 > cap) { cap *= 2; blob = realloc(blob, cap); if (!blob) abort(); }
    napi_get_value_string_utf8(env, v, blob + used, len + 1, &len);
    offs[i] = (uint32_t)used;
    lens[i] = (uint16_t)len;
    used += len + 1;
  }
  char *page = malloc(r->size ? r->size : 1);
  if (!page) abort();
  pthread_mutex_lock(&p->lock);
  node *dir = node_by_id(p, r->nodeid);
  size_t got = 0;
  struct fuse_entry_out entry;
  int found = 0;
  if (dir) {
    listing *l = listing_make(p, dir, n);
    l->names = blob;
    blob = NULL;
    for (uint32_t i = 0; i < n; i++) {
      l->e[i].name_off = offs[i];
      l->e[i].name_len = lens[i];
      l->e[i].kind = ((uint8_t *)kinds)[i];
      l->e[i].size = (uint64_t)((double *)sizes)[i];
      l->e[i].mtime_ms = (int64_t)((double *)mtimes)[i];
      l->e[i].flags = ((uint8_t *)flags)[i];
    }
    listing_index(l);
    if (r->opcode == FUSE_LOOKUP) {
      const lentry *le = r->name ? listing_find(l, r->name, r->name_len) : NULL;
      node *c = le && le->kind != K_UNKNOWN ? node_make(p, dir, r->name, r->name_len, le->kind, le->size, le->mtime_ms, le->flags) : NULL;
      if (c) {
        c->nlookup++;
        fill_entry(p, c, &entry);
        found = 1;
      }
    } else got = dir_page(p, dir, r->offset, r->size, r->opcode == FUSE_READDIRPLUS, page);
    /* Control listings are not kept: JavaScript answers each readdir and lookup there. */
    if (node_in_control(p, dir)) listing_free(p, l);
  }
  pthread_mutex_unlock(&p->lock);
  if (r->opcode == FUSE_LOOKUP && found) reply_buf(p, r->fd, r->unique, &entry, sizeof entry, NULL, 0);
  else if (dir && r->opcode != FUSE_LOOKUP) reply_buf(p, r->fd, r->unique, page, got, NULL, 0);
  else reply_err(p, r->fd, r->unique, ENOENT);
  free(blob); free(offs); free(lens); free(page);
  pending_free(r);
  return bool_val(env, 1);
}

/* replyOpen(plane, req, fileId) -> fh (0 when the request was answered already). */
static napi_value js_reply_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  plane *p;
  pending *r = take(env, info, 3, argv, &p);
  if (!r) return num(env, 0);
  uint32_t fid = (uint32_t)arg_num(env, argv[2]);
  uint64_t fh = 0;
  pthread_mutex_lock(&p->lock);
  node *n = node_by_id(p, r->nodeid);
  if (n) {
    fstate *f = fid ? fstate_by_id(p, fid) : NULL;
    if (f && f->dead) f = NULL;
    if (f != n->file) {
      if (n->file) fstate_unref(p, n->file);
      n->file = f;
      if (f) fstate_ref(f);
    }
    answer_open(p, r->fd, r->unique, n, f);
    fh = p->next_fh - 1;
  }
  pthread_mutex_unlock(&p->lock);
  if (!n) reply_err(p, r->fd, r->unique, ENOENT);
  pending_free(r);
  return num(env, (double)fh);
}

/* replyData(plane, req, buffer, length): a read's bytes, a link's target, an attribute's value. */
static napi_value js_reply_data(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  plane *p;
  pending *r = take(env, info, 4, argv, &p);
  if (!r) return bool_val(env, 0);
  void *data = NULL;
  size_t len = 0;
  napi_get_buffer_info(env, argv[2], &data, &len);
  size_t want = (size_t)arg_num(env, argv[3]);
  if (want < len) len = want;
  if (r->opcode == FUSE_GETXATTR) {
    if (r->size == 0) {
      struct fuse_getxattr_out o = { .size = (uint32_t)len, .padding = 0 };
      reply_buf(p, r->fd, r->unique, &o, sizeof o, NULL, 0);
    } else if (r->size < len) reply_err(p, r->fd, r->unique, ERANGE);
    else reply_buf(p, r->fd, r->unique, data, len, NULL, 0);
  } else {
    if (r->opcode == FUSE_READ && len > p->max_write) len = p->max_write;
    reply_buf(p, r->fd, r->unique, data, len, NULL, 0);
  }
  pending_free(r);
  return bool_val(env, 1);
}

/* replyStatfs(plane, req, [blocks, bfree, bavail, files, ffree, bsize, namelen, frsize]) */
static napi_value js_reply_statfs(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  plane *p;
  pending *r = take(env, info, 3, argv, &p);
  if (!r) return bool_val(env, 0);
  double v[8] = { 0 };
  for (uint32_t i = 0; i < 8; i++) {
    napi_value x;
    if (napi_get_element(env, argv[2], i, &x) == napi_ok) v[i] = arg_num(env, x);
  }
  struct fuse_statfs_out o;
  memset(&o, 0, sizeof o);
  o.st.blocks = (uint64_t)v[0]; o.st.bfree = (uint64_t)v[1]; o.st.bavail = (uint64_t)v[2];
  o.st.files = (uint64_t)v[3]; o.st.ffree = (uint64_t)v[4]; o.st.bsize = (uint32_t)v[5];
  o.st.namelen = (uint32_t)v[6]; o.st.frsize = (uint32_t)v[7];
  reply_buf(p, r->fd, r->unique, &o, sizeof o, NULL, 0);
  pending_free(r);
  return bool_val(env, 1);
}

/* ---- cached files ---- */

static void finalize_bits(napi_env env, void *data, void *hint) {
  (void)env; (void)data;
  fstate *f = hint;
  plane *p = f->owner;
  pthread_mutex_lock(&p->lock);
  fstate_unref(p, f);
  pthread_mutex_unlock(&p->lock);
}

/* newFile(plane, dataPath, size, blockSize) -> [id, Uint8Array]: a presence map shared with the
 * workers. JavaScript sets a byte to 1 once that block is on disk and verified, 0 when dropped. */
static napi_value js_new_file(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  plane *p = arg_plane(env, argv[0]);
  if (!p) return NULL;
  char *path = arg_str(env, argv[1]);
  if (!path) { napi_throw_type_error(env, NULL, "newFile: path must be a string"); return NULL; }
  uint64_t size = (uint64_t)arg_num(env, argv[2]);
  uint32_t bs = (uint32_t)arg_num(env, argv[3]);
  if (bs == 0) { free(path); napi_throw_range_error(env, NULL, "newFile: block size 0"); return NULL; }
  pthread_mutex_lock(&p->lock);
  fstate *f = fstate_new(p, path, size, bs);
  fstate_ref(f); /* the ArrayBuffer's, dropped by its finalizer */
  pthread_mutex_unlock(&p->lock);
  free(path);
  napi_value ab, arr, out, id;
  if (napi_create_external_arraybuffer(env, f->bits, f->nblocks, finalize_bits, f, &ab) != napi_ok) {
    pthread_mutex_lock(&p->lock);
    fstate_unref(p, f);
    pthread_mutex_unlock(&p->lock);
    napi_throw_error(env, NULL, "desfs native: cannot share a presence map");
    return NULL;
  }
  napi_create_typedarray(env, napi_uint8_array, f->nblocks, ab, 0, &arr);
  napi_create_array_with_length(env, 2, &out);
  napi_create_uint32(env, f->id, &id);
  napi_set_element(env, out, 0, id);
  napi_set_element(env, out, 1, arr);
  return out;
}

/* retireFile(plane, id): the block store forgot the file (evicted, dropped, unloaded). Its map is
 * cleared and never served from again; open handles fall back to JavaScript; passthrough opens
 * keep their backing file, which still holds the verified bytes. */
static napi_value js_retire_file(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  plane *p = arg_plane(env, argv[0]);
  if (!p) return NULL;
  uint32_t id = (uint32_t)arg_num(env, argv[1]);
  pthread_mutex_lock(&p->lock);
  fstate *f = fstate_by_id(p, id);
  if (f && !f->dead) {
    f->dead = 1;
    memset(f->bits, 0, f->nblocks);
    fstate_unref(p, f);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

/* ---- the tree ---- */

/* forgetTree(plane): after a reload, drops every listing and every name, so lookups and listings
 * are asked of JavaScript (and the new tree) again. */
static napi_value js_forget_tree(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  plane *p = arg_plane(env, argv[0]);
  if (!p) return NULL;
  pthread_mutex_lock(&p->lock);
  listings_free_all(p);
  nodes_unname_all(p);
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

typedef struct inval_work {
  plane *p;
  char **names;
  uint32_t n;
  uint32_t dropped;
  char failed[1024];
  napi_deferred deferred;
  napi_async_work work;
} inval_work;

static void inval_execute(napi_env env, void *data) {
  (void)env;
  inval_work *w = data;
  if (w->p->stopping) return;
  size_t fl = 0;
  for (uint32_t i = 0; i < w->n; i++) {
    int rc = notify_inval_entry(w->p, FUSE_ROOT_ID, w->names[i], strlen(w->names[i]));
    if (rc == 0) w->dropped++;
    else if (rc != -ENOENT && fl < sizeof w->failed - 64)
      fl += (size_t)snprintf(w->failed + fl, sizeof w->failed - fl, "%s%s: %s", fl ? "; " : "", w->names[i], strerror(-rc));
  }
  int rc = notify_inval_inode(w->p, FUSE_ROOT_ID);
  if (rc != 0 && rc != -ENOENT && fl < sizeof w->failed - 64)
    snprintf(w->failed + fl, sizeof w->failed - fl, "%sroot directory: %s", fl ? "; " : "", strerror(-rc));
}

static void inval_complete(napi_env env, napi_status status, void *data) {
  (void)status;
  inval_work *w = data;
  napi_value res, v;
  napi_create_object(env, &res);
  napi_create_uint32(env, w->dropped, &v);
  napi_set_named_property(env, res, "dropped", v);
  napi_create_string_utf8(env, w->failed, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, res, "failed", v);
  napi_resolve_deferred(env, w->deferred, res);
  napi_delete_async_work(env, w->work);
  for (uint32_t i = 0; i < w->n; i++) free(w->names[i]);
  free(w->names);
  free(w);
}

/* invalidate(plane, rootNames[]) -> Promise<{dropped, failed}>: makes the kernel forget these names
 * under the root (and everything below them) and the root's cached pages. Sent from a pool thread. */
static napi_value js_invalidate(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  plane *p = arg_plane(env, argv[0]);
  if (!p) return NULL;
  inval_work *w = calloc(1, sizeof *w);
  if (!w) abort();
  w->p = p;
  napi_get_array_length(env, argv[1], &w->n);
  w->names = calloc(w->n ? w->n : 1, sizeof(char *));
  if (!w->names) abort();
  for (uint32_t i = 0; i < w->n; i++) {
    napi_value v;
    napi_get_element(env, argv[1], i, &v);
    w->names[i] = arg_str(env, v);
    if (!w->names[i]) w->names[i] = strdup("");
  }
  napi_value promise, name;
  napi_create_promise(env, &w->deferred, &promise);
  napi_create_string_utf8(env, "desfs-invalidate", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, inval_execute, inval_complete, w, &w->work);
  napi_queue_async_work(env, w->work);
  return promise;
}

/* ---- status ---- */

static void set_num(napi_env env, napi_value obj, const char *k, double v) {
  napi_set_named_property(env, obj, k, num(env, v));
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  plane *p = arg_plane(env, argv[0]);
  if (!p) return NULL;
  napi_value o, v;
  napi_create_object(env, &o);
  pthread_mutex_lock(&p->lock);
  set_num(env, o, "nodes", (double)p->id_count);
  set_num(env, o, "openHandles", (double)p->handle_count);
  set_num(env, o, "pending", (double)p->pend_count);
  set_num(env, o, "listedEntries", (double)p->listed_entries);
  pthread_mutex_unlock(&p->lock);
  set_num(env, o, "protocolMinor", p->proto_minor);
  set_num(env, o, "workers", p->nworkers);
  set_num(env, o, "maxRead", p->max_write);
  set_num(env, o, "maxReadahead", p->max_readahead);
  set_num(env, o, "devMajor", p->dev_major);
  set_num(env, o, "devMinor", p->dev_minor);
  napi_set_named_property(env, o, "passthrough", bool_val(env, p->passthrough && !p->passthrough_failed));
  napi_create_string_utf8(env, p->passthrough_why, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, o, "passthroughNote", v);
  napi_set_named_property(env, o, "rootMount", bool_val(env, p->root_mount));
  const counters *c = &p->c;
  set_num(env, o, "nativeLookups", (double)c->native_lookup);
  set_num(env, o, "nativeGetattrs", (double)c->native_getattr);
  set_num(env, o, "nativeReaddirs", (double)c->native_readdir);
  set_num(env, o, "nativeOpens", (double)c->native_open);
  set_num(env, o, "nativeReads", (double)c->native_read);
  set_num(env, o, "nativeReadBytes", (double)c->native_read_bytes);
  set_num(env, o, "passthroughOpens", (double)c->passthrough_open);
  set_num(env, o, "toJavaScript", (double)c->js_dispatch);
  set_num(env, o, "backstopAnswers", (double)c->backstop);
  set_num(env, o, "replyErrors", (double)c->reply_errors);
  set_num(env, o, "forgets", (double)c->forgets);
  return o;
}

/* peerCredentials(fd) -> {pid, uid, gid}: who is at the other end of a Unix socket. */
static napi_value js_peer_credentials(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd = (int)arg_num(env, argv[0]);
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
    napi_throw_error(env, "EPEERCRED", strerror(errno));
    return NULL;
  }
  napi_value o;
  napi_create_object(env, &o);
  set_num(env, o, "pid", cr.pid);
  set_num(env, o, "uid", cr.uid);
  set_num(env, o, "gid", cr.gid);
  return o;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "mount", NULL, js_mount, NULL, NULL, NULL, napi_default, NULL },
    { "unmount", NULL, js_unmount, NULL, NULL, NULL, napi_default, NULL },
    { "replyErr", NULL, js_reply_err, NULL, NULL, NULL, napi_default, NULL },
    { "replyEntry", NULL, js_reply_entry, NULL, NULL, NULL, napi_default, NULL },
    { "replyListing", NULL, js_reply_listing, NULL, NULL, NULL, napi_default, NULL },
    { "replyOpen", NULL, js_reply_open, NULL, NULL, NULL, napi_default, NULL },
    { "replyData", NULL, js_reply_data, NULL, NULL, NULL, napi_default, NULL },
    { "replyStatfs", NULL, js_reply_statfs, NULL, NULL, NULL, napi_default, NULL },
    { "newFile", NULL, js_new_file, NULL, NULL, NULL, napi_default, NULL },
    { "retireFile", NULL, js_retire_file, NULL, NULL, NULL, napi_default, NULL },
    { "forgetTree", NULL, js_forget_tree, NULL, NULL, NULL, napi_default, NULL },
    { "invalidate", NULL, js_invalidate, NULL, NULL, NULL, napi_default, NULL },
    { "stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL },
    { "peerCredentials", NULL, js_peer_credentials, NULL, NULL, NULL, napi_default, NULL },
    { "writeDirect", NULL, js_write_direct, NULL, NULL, NULL, napi_default, NULL },
    { "writePieces", NULL, js_write_pieces, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
