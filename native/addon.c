/* usertgt's native addon: the module entry point; the functions live in one file per concern. */
#include "usertgt_native.h"

void usertgt_export(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value f;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);
  napi_set_named_property(env, exports, name, f);
}

NAPI_MODULE_INIT() {
  usertgt_init_range_ops(env, exports);
  usertgt_init_block_device(env, exports);
  usertgt_init_uring(env, exports);
  usertgt_init_malloc_trim(env, exports);
  usertgt_init_aligned_buffer(env, exports);
  usertgt_init_cpu_affinity(env, exports);
  return exports;
}
