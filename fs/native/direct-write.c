/* Cache writes that bypass the page cache: writeDirect(fd, pos, parts[]) -> Promise<void>, for a
 * descriptor opened O_DIRECT. A sync fills the cache with files nobody reads yet; through the page
 * cache each GB cost the pool threads about 1.5 s of kernel time on this box (page-cache folios made
 * and filled: `dd bs=1M` of 1 GB to a file took 2.0-3.1 s, against 0.15 s with oflag=direct), and
 * pushed readers' pages out of memory (cache/direct-file.ts). O_DIRECT wants memory, offset and length aligned, and the blocks arrive in
 * socket chunks at any address, so a pool thread copies them into an aligned buffer of its own and
 * writes from there (the copy of hot bytes costs about a tenth of what the page cache did).
 *
 * Memory: the parts stay alive through a reference to their array until the completion; each pool
 * thread keeps one aligned buffer for its life (4 threads: 4 MiB), so the copy lands in memory that
 * is already there. */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "direct-write.h"

/* O_DIRECT alignment asked of memory, offset and length: 4 KiB covers 512-byte and 4 KiB sectors. */
#define ALIGN 4096
/* Bytes copied and written at a time. */
#define CHUNK (1 << 20)

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
  int err;
} direct_write;

static __thread uint8_t *thread_buf;

static int write_all(int fd, const uint8_t *buf, size_t len, int64_t pos) {
  size_t done = 0;
  while (done < len) {
    ssize_t r = pwrite(fd, buf + done, len - done, (off_t)(pos + (int64_t)done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    if (r == 0) return EIO;
    done += (size_t)r;
  }
  return 0;
}

static void dw_execute(napi_env env, void *data) {
  (void)env;
  direct_write *w = data;
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
    if ((w->err = write_all(w->fd, thread_buf, fill, pos)) != 0) return;
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

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

napi_value js_write_direct(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) return throw_type(env, "writeDirect(fd, pos, parts)");
  int32_t fd;
  int64_t pos;
  uint32_t n;
  bool is_array;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) return throw_type(env, "writeDirect: fd must be a descriptor");
  if (napi_get_value_int64(env, argv[1], &pos) != napi_ok || pos < 0 || pos % ALIGN)
    return throw_type(env, "writeDirect: pos must be a multiple of 4096");
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[2], &n) != napi_ok)
    return throw_type(env, "writeDirect: parts must be an array of buffers");
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
      return throw_type(env, "writeDirect: parts must be an array of buffers");
    }
    w->parts[i] = (part){ base, len };
    total += len;
  }
  if (total % ALIGN) {
    free(w->parts);
    free(w);
    return throw_type(env, "writeDirect: the parts' length must be a multiple of 4096");
  }
  w->fd = fd;
  w->pos = pos;
  w->n = n;
  napi_value promise, name;
  if (napi_create_reference(env, argv[2], 1, &w->parts_ref) != napi_ok || napi_create_promise(env, &w->deferred, &promise) != napi_ok) {
    free(w->parts);
    free(w);
    napi_throw_error(env, NULL, "desfs native: writeDirect could not start");
    return NULL;
  }
  napi_create_string_utf8(env, "desfs-write-direct", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, dw_execute, dw_complete, w, &w->work);
  napi_queue_async_work(env, w->work);
  return promise;
}
