/*
 * usertgt native helper: fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) for the AIO block
 * device's UNMAP and WRITE ZEROES, which Node's fs API cannot express. The call runs on the libuv
 * thread pool (napi async work) so a slow file system never blocks the event loop.
 *
 * punchHole(fd: number, offset: number, length: number): Promise<void>
 * rejects with an Error whose `code` is the errno name (EOPNOTSUPP when the file system has no holes).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int64_t offset;
  int64_t length;
  int err;
} punch_request;

static const char *errno_code(int err) {
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
    default: return "EUNKNOWN";
  }
}

static void punch_execute(napi_env env, void *data) {
  (void)env;
  punch_request *r = data;
  int rc;
  do {
    rc = fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)r->offset, (off_t)r->length);
  } while (rc != 0 && errno == EINTR);
  r->err = rc == 0 ? 0 : errno;
}

static void punch_complete(napi_env env, napi_status status, void *data) {
  punch_request *r = data;
  if (status == napi_ok && r->err == 0) {
    napi_value undef;
    napi_get_undefined(env, &undef);
    napi_resolve_deferred(env, r->deferred, undef);
  } else {
    int err = status == napi_ok ? r->err : ECANCELED;
    napi_value code, msg, error, errnum;
    napi_create_string_utf8(env, err == ECANCELED ? "ECANCELED" : errno_code(err), NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &error);
    napi_create_int32(env, err, &errnum);
    napi_set_named_property(env, error, "errno", errnum);
    napi_reject_deferred(env, r->deferred, error);
  }
  napi_delete_async_work(env, r->work);
  free(r);
}

static napi_value punch_hole(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  int32_t fd;
  int64_t offset, length;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok) {
    napi_throw_type_error(env, NULL, "punchHole(fd, offset, length) takes three numbers");
    return NULL;
  }
  if (fd < 0 || offset < 0 || length <= 0) {
    napi_throw_range_error(env, NULL, "punchHole: fd and offset must be >= 0, length > 0");
    return NULL;
  }
  punch_request *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    napi_throw_error(env, NULL, "punchHole: out of memory");
    return NULL;
  }
  r->fd = fd;
  r->offset = offset;
  r->length = length;
  napi_value promise, name;
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, "usertgt.punchHole", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, punch_execute, punch_complete, r, &r->work) != napi_ok ||
      napi_queue_async_work(env, r->work) != napi_ok) {
    free(r);
    napi_throw_error(env, NULL, "punchHole: cannot queue work");
    return NULL;
  }
  return promise;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "punchHole", NAPI_AUTO_LENGTH, punch_hole, NULL, &fn);
  napi_set_named_property(env, exports, "punchHole", fn);
  return exports;
}
