/* The errno name for an Error's `code` (what Node's own fs errors carry), shared by the helpers. */
#ifndef USERTGT_ERRNO_NAME_H
#define USERTGT_ERRNO_NAME_H
#include <node_api.h>

const char *usertgt_errno_name(int err);
/* A JS Error with code = errno name, message = "<what>: strerror", errno = err. */
napi_value usertgt_errno_error(napi_env env, const char *what, int err);

#endif
