/* writeDirect(fd, pos, parts[]): cache writes that bypass the page cache (direct-write.c). */
#ifndef DESFS_DIRECT_WRITE_H
#define DESFS_DIRECT_WRITE_H
#include <node_api.h>

napi_value js_write_direct(napi_env env, napi_callback_info info);

#endif
