/*
 * Range operations Node's fs API cannot express, run on the libuv thread pool (napi async work) so a
 * slow file system or disk never blocks the event loop:
 *
 *   punchHole(fd, offset, length): fallocate(PUNCH_HOLE | KEEP_SIZE) on a regular file (UNMAP and
 *     WRITE ZEROES of the AIO block device).
 *   blockDiscard(fd, offset, length): ioctl(BLKDISCARD) on a block device (UNMAP).
 *   blockZeroOut(fd, offset, length): ioctl(BLKZEROOUT) on a block device (WRITE ZEROES; the kernel
 *     uses the device's write-zeroes command or writes zero pages).
 *
 * Each returns Promise<void>, rejected with an Error whose `code` is the errno name.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <node_api.h>
#include "errno_name.h"
#include "usertgt_native.h"

typedef enum { RANGE_PUNCH_HOLE, RANGE_BLK_DISCARD, RANGE_BLK_ZEROOUT } range_op;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  range_op op;
  int fd;
  int64_t offset;
  int64_t length;
  int err;
} range_request;

static const char *const op_names[] = {"punchHole", "blockDiscard", "blockZeroOut"};

static void range_execute(napi_env env, void *data) {
  (void)env;
  range_request *r = data;
  int rc;
  uint64_t range[2] = {(uint64_t)r->offset, (uint64_t)r->length};
  do {
    switch (r->op) {
      case RANGE_PUNCH_HOLE:
        rc = fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)r->offset,
                       (off_t)r->length);
        break;
      case RANGE_BLK_DISCARD:
        rc = ioctl(r->fd, BLKDISCARD, range);
        break;
      default:
        rc = ioctl(r->fd, BLKZEROOUT, range);
        break;
    }
  } while (rc != 0 && errno == EINTR);
  r->err = rc == 0 ? 0 : errno;
}

static void range_complete(napi_env env, napi_status status, void *data) {
  range_request *r = data;
  if (status == napi_ok && r->err == 0) {
    napi_value undef;
    napi_get_undefined(env, &undef);
    napi_resolve_deferred(env, r->deferred, undef);
  } else {
    int err = status == napi_ok ? r->err : ECANCELED;
    napi_reject_deferred(env, r->deferred, usertgt_errno_error(env, op_names[r->op], err));
  }
  napi_delete_async_work(env, r->work);
  free(r);
}

static napi_value range_start(napi_env env, napi_callback_info info, range_op op) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  int32_t fd;
  int64_t offset, length;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok) {
    napi_throw_type_error(env, NULL, "(fd, offset, length) takes three numbers");
    return NULL;
  }
  if (fd < 0 || offset < 0 || length <= 0) {
    napi_throw_range_error(env, NULL, "fd and offset must be >= 0, length > 0");
    return NULL;
  }
  range_request *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  r->op = op;
  r->fd = fd;
  r->offset = offset;
  r->length = length;
  napi_value promise, name;
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, op_names[op], NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, range_execute, range_complete, r, &r->work) != napi_ok ||
      napi_queue_async_work(env, r->work) != napi_ok) {
    free(r);
    napi_throw_error(env, NULL, "cannot queue work");
    return NULL;
  }
  return promise;
}

static napi_value punch_hole(napi_env env, napi_callback_info info) {
  return range_start(env, info, RANGE_PUNCH_HOLE);
}
static napi_value block_discard(napi_env env, napi_callback_info info) {
  return range_start(env, info, RANGE_BLK_DISCARD);
}
static napi_value block_zero_out(napi_env env, napi_callback_info info) {
  return range_start(env, info, RANGE_BLK_ZEROOUT);
}

void usertgt_init_range_ops(napi_env env, napi_value exports) {
  usertgt_export(env, exports, "punchHole", punch_hole);
  usertgt_export(env, exports, "blockDiscard", block_discard);
  usertgt_export(env, exports, "blockZeroOut", block_zero_out);
}
