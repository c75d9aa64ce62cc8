/*
 * CPU affinity of the whole process, for SPDK's ReactorMask / `-m` (the CPUs its reactors run on).
 *
 *   setCpuAffinity(cpus: number[]) -> 0 | -errno
 *     sched_setaffinity on every thread in /proc/self/task. Node's threads (libuv's pool, V8's
 *     workers, librbd's) exist before the config is read, and a thread's mask is only inherited at
 *     creation, so each one is set; threads made later inherit from their creator.
 *   getCpuAffinity() -> number[]   the CPUs the calling thread may run on
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include "usertgt_native.h"

static napi_value number(napi_env env, int32_t v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

static napi_value set_cpu_affinity(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool is_array = false;
  if (argc < 1 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array) {
    napi_throw_type_error(env, NULL, "setCpuAffinity(cpus: number[])");
    return NULL;
  }
  uint32_t n = 0;
  napi_get_array_length(env, argv[0], &n);
  cpu_set_t set;
  CPU_ZERO(&set);
  for (uint32_t i = 0; i < n; i++) {
    napi_value el;
    int32_t cpu = -1;
    napi_get_element(env, argv[0], i, &el);
    if (napi_get_value_int32(env, el, &cpu) != napi_ok || cpu < 0 || cpu >= CPU_SETSIZE) {
      napi_throw_range_error(env, NULL, "setCpuAffinity: a CPU number out of range");
      return NULL;
    }
    CPU_SET(cpu, &set);
  }
  DIR *dir = opendir("/proc/self/task");
  if (dir == NULL) return number(env, -errno);
  int result = 0;
  struct dirent *d;
  while ((d = readdir(dir)) != NULL) {
    if (d->d_name[0] < '0' || d->d_name[0] > '9') continue;
    pid_t tid = (pid_t)strtol(d->d_name, NULL, 10);
    /* A thread that exited since readdir saw it is not an error. */
    if (sched_setaffinity(tid, sizeof set, &set) != 0 && errno != ESRCH && result == 0) result = -errno;
  }
  closedir(dir);
  return number(env, result);
}

static napi_value get_cpu_affinity(napi_env env, napi_callback_info info) {
  (void)info;
  cpu_set_t set;
  CPU_ZERO(&set);
  napi_value out;
  napi_create_array(env, &out);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return out;
  uint32_t k = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
    if (CPU_ISSET(cpu, &set)) napi_set_element(env, out, k++, number(env, cpu));
  }
  return out;
}

void usertgt_init_cpu_affinity(napi_env env, napi_value exports) {
  usertgt_export(env, exports, "setCpuAffinity", set_cpu_affinity);
  usertgt_export(env, exports, "getCpuAffinity", get_cpu_affinity);
}
