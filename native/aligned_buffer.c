/*
 * alignedBuffer(bytes): a Buffer over page-aligned memory (posix_memalign, 4096), freed when the
 * Buffer is collected. READ data buffers come from here so that an O_DIRECT read (a block device
 * under io_uring) lands in them directly; an ordinary Buffer is only 16-byte aligned and would go
 * through the engine's bounce chunk (a copy, and a bounded number of chunks).
 */
#include <stdint.h>
#include <stdlib.h>
#include "usertgt_native.h"

#define PAGE 4096

/* The size rides in `hint`, so the collector's view of external memory shrinks with the free. */
static void free_aligned(napi_env env, void *data, void *hint) {
  int64_t ignored;
  napi_adjust_external_memory(env, -(int64_t)(uintptr_t)hint, &ignored);
  free(data);
}

static napi_value aligned_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint32_t bytes;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_uint32(env, argv[0], &bytes) != napi_ok || bytes == 0) {
    napi_throw_type_error(env, NULL, "alignedBuffer(bytes > 0)");
    return NULL;
  }
  void *p;
  if (posix_memalign(&p, PAGE, bytes) != 0) {
    napi_throw_error(env, "ENOMEM", "alignedBuffer: out of memory");
    return NULL;
  }
  napi_value buf;
  if (napi_create_external_buffer(env, bytes, p, free_aligned, (void *)(uintptr_t)bytes, &buf) != napi_ok) {
    free(p);
    napi_throw_error(env, NULL, "alignedBuffer: cannot wrap the memory in a Buffer");
    return NULL;
  }
  /* Tell V8 what the Buffer holds, as for its own ArrayBuffers: a dropped one is then collected in time. */
  int64_t ignored;
  napi_adjust_external_memory(env, (int64_t)bytes, &ignored);
  return buf;
}

void usertgt_init_aligned_buffer(napi_env env, napi_value exports) {
  usertgt_export(env, exports, "alignedBuffer", aligned_buffer);
}
