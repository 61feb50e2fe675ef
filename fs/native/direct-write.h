/* writeDirect(fd, pos, parts[]) and writePieces(fd, pos, parts[]): cache writes from pool threads,
 * around the page cache and through it in 64 KiB pieces (direct-write.c). */
#ifndef DESFS_DIRECT_WRITE_H
#define DESFS_DIRECT_WRITE_H
#include <node_api.h>

napi_value js_write_direct(napi_env env, napi_callback_info info);
napi_value js_write_pieces(napi_env env, napi_callback_info info);

#endif
