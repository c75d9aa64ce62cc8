/*
 * mallocTrim(): glibc's malloc_trim(0). Node reads sockets into 64 KiB buffers from malloc's arenas;
 * after a burst of buffered WRITE data is freed, those arenas keep the pages, and the process's RSS
 * stays at its peak. malloc_trim gives free pages back to the kernel (madvise MADV_DONTNEED on whole
 * free pages, since glibc 2.8). Called rarely: after a large write-data budget drains.
 */
#include <malloc.h>
#include "usertgt_native.h"

static napi_value malloc_trim_js(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value released;
  napi_get_boolean(env, malloc_trim(0) != 0, &released);
  return released;
}

void usertgt_init_malloc_trim(napi_env env, napi_value exports) {
  usertgt_export(env, exports, "mallocTrim", malloc_trim_js);
}
