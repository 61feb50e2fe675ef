/* Cache writes from pool threads, for the cache's blocks (which arrive in socket chunks at any
 * address); each returns a Promise<void>.
 *
 * writeDirect(fd, pos, parts[]) writes around the page cache, for a descriptor opened O_DIRECT. A
 * sync fills the cache with files nobody reads yet; through the page cache each GB cost the pool
 * threads about 1.5 s of kernel time on this box (page-cache folios made and filled: `dd bs=1M` of
 * 1 GB to a file took 2.0-3.1 s, against 0.15 s with oflag=direct), and pushed readers' pages out
 * of memory (cache/direct-file.ts). O_DIRECT wants memory, offset and length aligned, so a pool
 * thread copies the parts into an aligned buffer of its own and writes from there (the copy of hot
 * bytes costs about a tenth of what the page cache did).
 *
 * writePieces(fd, pos, parts[]) writes through the page cache, 64 KiB per pwritev: the blocks
 * readers want, which the plane reads back at once. The size of a write decides the size of the
 * page-cache folios the kernel makes for it, and large ones cost far more here: 1 GB written by
 * `dd` took 1.3-2.2 s of kernel time with bs=1M, 0.23-0.42 s with bs=64k. Node's fs makes a call
 * per write on the event loop (tens of microseconds each), so the pieces are cut here, in the pool
 * thread, from the parts themselves (no copy).
 *
 * Memory: the parts stay alive through a reference to their array until the completion; each pool
 * thread keeps one aligned buffer for its life (4 threads: 4 MiB), so the copy lands in memory that
 * is already there. The caller keeps the descriptor open until the promise settles. */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include "direct-write.h"

/* O_DIRECT alignment asked of memory, offset and length: 4 KiB covers 512-byte and 4 KiB sectors. */
#define ALIGN 4096
/* Bytes copied and written at a time (direct). */
#define CHUNK (1 << 20)
/* Bytes per write through the page cache (pieces), and iovecs per write at most. */
#define PIECE (64 << 10)
#define PIECE_IOV 64

typedef struct part {
  const uint8_t *base;
  size_t len;
} part;

typedef struct direct_write {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref parts_ref; /* keeps the parts' buffers alive until the completion */
  int fd;
  int64_t pos;
  part *parts;
  uint32_t n;
  int direct; /* 1: writeDirect (copy, aligned, O_DIRECT); 0: writePieces */
  int err;
} direct_write;

static __thread uint8_t *thread_buf;

/* Writes all of iov[0..k) at pos, going on after short writes (iov is consumed). */
static int writev_all(int fd, struct iovec *iov, int k, int64_t pos) {
  while (k > 0) {
    ssize_t r = pwritev(fd, iov, k, (off_t)pos);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    if (r == 0) return EIO;
    pos += r;
    size_t left = (size_t)r;
    while (k > 0 && left >= iov[0].iov_len) {
      left -= iov[0].iov_len;
      iov++;
      k--;
    }
    if (k > 0) {
      iov[0].iov_base = (uint8_t *)iov[0].iov_base + left;
      iov[0].iov_len -= left;
    }
  }
  return 0;
}

static void write_pieces(direct_write *w) {
  struct iovec iov[PIECE_IOV];
  uint32_t i = 0;
  size_t off = 0; /* into parts[i] */
  int64_t pos = w->pos;
  while (i < w->n) {
    int k = 0;
    size_t len = 0;
    while (i < w->n && k < PIECE_IOV && len < PIECE) {
      size_t n = w->parts[i].len - off;
      if (n > PIECE - len) n = PIECE - len;
      iov[k].iov_base = (void *)(w->parts[i].base + off);
      iov[k].iov_len = n;
      k++;
      len += n;
      off += n;
      if (off == w->parts[i].len) {
        i++;
        off = 0;
      }
    }
    if (len == 0) continue; /* only empty parts: i moved on */
    if ((w->err = writev_all(w->fd, iov, k, pos)) != 0) return;
    pos += (int64_t)len;
  }
}

static void dw_execute(napi_env env, void *data) {
  (void)env;
  direct_write *w = data;
  if (!w->direct) {
    write_pieces(w);
    return;
  }
  if (!thread_buf) {
    void *b = NULL;
    if (posix_memalign(&b, ALIGN, CHUNK) != 0) {
      w->err = ENOMEM;
      return;
    }
    thread_buf = b;
  }
  uint32_t i = 0;
  size_t off = 0; /* into parts[i] */
  int64_t pos = w->pos;
  for (;;) {
    size_t fill = 0;
    while (fill < CHUNK && i < w->n) {
      size_t n = w->parts[i].len - off;
      if (n > CHUNK - fill) n = CHUNK - fill;
      memcpy(thread_buf + fill, w->parts[i].base + off, n);
      fill += n;
      off += n;
      if (off == w->parts[i].len) {
        i++;
        off = 0;
      }
    }
    if (fill == 0) return;
    struct iovec whole = { thread_buf, fill };
    if ((w->err = writev_all(w->fd, &whole, 1, pos)) != 0) return;
    pos += (int64_t)fill;
  }
}

static void dw_complete(napi_env env, napi_status status, void *data) {
  direct_write *w = data;
  int err = status == napi_cancelled ? ECANCELED : w->err;
  if (err == 0) {
    napi_value undef;
    napi_get_undefined(env, &undef);
    napi_resolve_deferred(env, w->deferred, undef);
  } else {
    const char *name = strerrorname_np(err);
    napi_value code, msg, e;
    napi_create_string_utf8(env, name ? name : "EIO", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &e);
    napi_set_named_property(env, e, "code", code);
    napi_reject_deferred(env, w->deferred, e);
  }
  napi_delete_reference(env, w->parts_ref);
  napi_delete_async_work(env, w->work);
  free(w->parts);
  free(w);
}

/* Throws the TypeError "<what>: <why>" (what: writeDirect or writePieces). */
static napi_value bad_arg(napi_env env, const char *what, const char *why) {
  char msg[128];
  snprintf(msg, sizeof msg, "%s: %s", what, why);
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

static napi_value start_write(napi_env env, napi_callback_info info, int direct) {
  const char *what = direct ? "writeDirect" : "writePieces";
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) return bad_arg(env, what, "takes (fd, pos, parts)");
  int32_t fd;
  int64_t pos;
  uint32_t n;
  bool is_array;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) return bad_arg(env, what, "fd must be a descriptor");
  if (napi_get_value_int64(env, argv[1], &pos) != napi_ok || pos < 0 || (direct && pos % ALIGN))
    return bad_arg(env, what, direct ? "pos must be a multiple of 4096" : "pos must be a byte offset");
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[2], &n) != napi_ok)
    return bad_arg(env, what, "parts must be an array of buffers");
  direct_write *w = calloc(1, sizeof *w);
  if (!w) abort();
  w->parts = calloc(n ? n : 1, sizeof(part));
  if (!w->parts) abort();
  size_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    void *base = NULL;
    size_t len = 0;
    bool is_buf = false;
    napi_get_element(env, argv[2], i, &v);
    if (napi_is_buffer(env, v, &is_buf) != napi_ok || !is_buf || napi_get_buffer_info(env, v, &base, &len) != napi_ok) {
      free(w->parts);
      free(w);
      return bad_arg(env, what, "parts must be an array of buffers");
    }
    w->parts[i] = (part){ base, len };
    total += len;
  }
  if (direct && total % ALIGN) {
    free(w->parts);
    free(w);
    return bad_arg(env, what, "the parts' length must be a multiple of 4096");
  }
  w->fd = fd;
  w->direct = direct;
  w->pos = pos;
  w->n = n;
  napi_value promise, name;
  if (napi_create_reference(env, argv[2], 1, &w->parts_ref) != napi_ok || napi_create_promise(env, &w->deferred, &promise) != napi_ok) {
    free(w->parts);
    free(w);
    napi_throw_error(env, NULL, direct ? "desfs native: writeDirect could not start" : "desfs native: writePieces could not start");
    return NULL;
  }
  napi_create_string_utf8(env, direct ? "desfs-write-direct" : "desfs-write-pieces", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, dw_execute, dw_complete, w, &w->work);
  napi_queue_async_work(env, w->work);
  return promise;
}

napi_value js_write_direct(napi_env env, napi_callback_info info) {
  return start_write(env, info, 1);
}

napi_value js_write_pieces(napi_env env, napi_callback_info info) {
  return start_write(env, info, 0);
}
