/*
 * Geometry of a block device, from the ioctls the kernel answers without I/O (so they run on the
 * event loop): blockDeviceInfo(fd) returns
 *   { sizeBytes: BLKGETSIZE64, logicalBlockSize: BLKSSZGET, physicalBlockSize: BLKPBSZGET,
 *     minimumIoSize: BLKIOMIN, optimalIoSize: BLKIOOPT, rotational: BLKROTATIONAL }
 * and throws an Error with the errno name as `code` (ENOTTY when fd is not a block device).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/fs.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <node_api.h>
#include "errno_name.h"
#include "usertgt_native.h"

static void set_number(napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

static napi_value block_device_info(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "blockDeviceInfo(fd) takes a file descriptor");
    return NULL;
  }
  uint64_t size = 0;
  int logical = 0;
  unsigned int physical = 0, io_min = 0, io_opt = 0;
  unsigned short rotational = 0;
  const char *what = NULL;
  if (ioctl(fd, BLKGETSIZE64, &size) != 0) what = "BLKGETSIZE64";
  else if (ioctl(fd, BLKSSZGET, &logical) != 0) what = "BLKSSZGET";
  else if (ioctl(fd, BLKPBSZGET, &physical) != 0) what = "BLKPBSZGET";
  else if (ioctl(fd, BLKIOMIN, &io_min) != 0) what = "BLKIOMIN";
  else if (ioctl(fd, BLKIOOPT, &io_opt) != 0) what = "BLKIOOPT";
  else if (ioctl(fd, BLKROTATIONAL, &rotational) != 0) what = "BLKROTATIONAL";
  if (what != NULL) {
    napi_throw(env, usertgt_errno_error(env, what, errno));
    return NULL;
  }
  napi_value obj;
  napi_create_object(env, &obj);
  set_number(env, obj, "sizeBytes", (double)size);
  set_number(env, obj, "logicalBlockSize", logical);
  set_number(env, obj, "physicalBlockSize", physical);
  set_number(env, obj, "minimumIoSize", io_min);
  set_number(env, obj, "optimalIoSize", io_opt);
  napi_value rot;
  napi_get_boolean(env, rotational != 0, &rot);
  napi_set_named_property(env, obj, "rotational", rot);
  return obj;
}

void usertgt_init_block_device(napi_env env, napi_value exports) {
  usertgt_export(env, exports, "blockDeviceInfo", block_device_info);
}
