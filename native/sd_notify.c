/*
 * usertgt systemd helper: sd_notify(3)'s datagram to $NOTIFY_SOCKET, which Node cannot send (it has
 * no AF_UNIX datagram sockets). A separate addon from the block device helpers so that a build
 * problem in one never takes the other away.
 *
 * notify(socketPath: string, state: string): number
 *   sends `state` (e.g. "READY=1\nSTATUS=...") as one datagram to socketPath ("@name" is an abstract
 *   socket, as systemd documents for NOTIFY_SOCKET); returns 0, or the errno of the failed call.
 *   Called a handful of times in a server's life (ready, reloading, stopping), never on the data path,
 *   so it is synchronous: a datagram to a local socket does not block.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <node_api.h>

#define STATE_MAX 4096

static int send_notify(const char *path, size_t path_len, const char *state, size_t state_len) {
  struct sockaddr_un addr;
  if (path_len == 0 || path_len >= sizeof(addr.sun_path)) return EINVAL;
  if (path[0] != '/' && path[0] != '@') return EAFNOSUPPORT;  /* vsock: addresses are not served */
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path, path_len);
  if (path[0] == '@') addr.sun_path[0] = '\0';
  socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  ssize_t n;
  do {
    n = sendto(fd, state, state_len, MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len);
  } while (n < 0 && errno == EINTR);
  int err = n < 0 ? errno : ((size_t)n == state_len ? 0 : EMSGSIZE);
  close(fd);
  return err;
}

static napi_value notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2) {
    napi_throw_type_error(env, NULL, "notify(socketPath, state) takes two strings");
    return NULL;
  }
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  char state[STATE_MAX + 1];
  size_t path_len, state_len;
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof(path), &path_len) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], state, sizeof(state), &state_len) != napi_ok) {
    napi_throw_type_error(env, NULL, "notify(socketPath, state) takes two strings");
    return NULL;
  }
  if (state_len >= STATE_MAX) {
    napi_throw_range_error(env, NULL, "notify: state longer than 4095 bytes");
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, send_notify(path, path_len, state, state_len), &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "notify", NAPI_AUTO_LENGTH, notify, NULL, &fn);
  napi_set_named_property(env, exports, "notify", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
