#include "errno_name.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *usertgt_errno_name(int err) {
  switch (err) {
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOSYS: return "ENOSYS";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case ENOSPC: return "ENOSPC";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    case ENODEV: return "ENODEV";
    case EFBIG: return "EFBIG";
    case ENOTTY: return "ENOTTY";
    case EBUSY: return "EBUSY";
    case ECANCELED: return "ECANCELED";
    case ENOMEM: return "ENOMEM";
    case EAGAIN: return "EAGAIN";
    case ENXIO: return "ENXIO";
    default: return "EUNKNOWN";
  }
}

napi_value usertgt_errno_error(napi_env env, const char *what, int err) {
  char text[256];
  snprintf(text, sizeof(text), "%s: %s", what, strerror(err));
  napi_value code, msg, error, errnum;
  napi_create_string_utf8(env, usertgt_errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  return error;
}
