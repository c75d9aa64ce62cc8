/* The native addon's parts: one source file per concern, each adding its functions to the exports. */
#ifndef USERTGT_NATIVE_H
#define USERTGT_NATIVE_H
#include <node_api.h>

void usertgt_export(napi_env env, napi_value exports, const char *name, napi_callback fn);

void usertgt_init_range_ops(napi_env env, napi_value exports);
void usertgt_init_block_device(napi_env env, napi_value exports);
void usertgt_init_uring(napi_env env, napi_value exports);
void usertgt_init_malloc_trim(napi_env env, napi_value exports);
void usertgt_init_aligned_buffer(napi_env env, napi_value exports);
void usertgt_init_cpu_affinity(napi_env env, napi_value exports);

#endif
