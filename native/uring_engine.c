/*
 * The io_uring I/O engine: file and block-device reads, writes and syncs submitted and reaped on the
 * Node event loop, with no thread hand-off per request.
 *
 * One ring per process. Requests are prepared into the submission queue as JS issues them and
 * submitted once per event-loop turn (a uv_prepare and a uv_check handle flush what the turn queued,
 * or at once when the queue is full). The ring signals completions on an eventfd that libuv polls;
 * the poll callback reaps every CQE into two Int32Arrays JS gave at init (slot ids, results) and calls
 * JS once per batch, not once per I/O. Only this thread submits, so on Linux 6.1+ the ring defers
 * completion work to it (IORING_SETUP_DEFER_TASKRUN): a request that finishes elsewhere (a block
 * device's interrupt, an io-wq worker) signals the eventfd instead of interrupting the thread, and
 * the loop posts the CQEs when it looks (post_deferred).
 *
 * A request lives in a slot (0 <= slot < slots) chosen by JS. O_DIRECT requests whose buffers are
 * not aligned go through a bounce chunk from a fixed slab (allocated on first use, aligned to 4096):
 * writes are copied in before submission, reads copied out at completion. Nothing is allocated per
 * I/O except the iovec array of a request with more than INLINE_IOVS buffers.
 *
 * JS API (all numbers; errors as negative errno):
 *   uringInit(slots, onComplete(count), ids: Int32Array, results: Int32Array,
 *             bounceChunkSize, bounceChunks) -> 0 | -errno
 *   uringSubmit(slot, op, fd, offset, bufs: Buffer[], flags) -> 0 | -errno
 *     op 0 read, 1 write, 2 fdatasync; flags 1 = FUA (RWF_DSYNC on O_DIRECT or a block device, else
 *     a linked fdatasync; BackingStore sends a buffered file's FUA writes as plain writes and shares
 *     fdatasyncs among them instead), 2 = fd is O_DIRECT (align or bounce), 4 = fd is a block device
 *     -E2BIG: an O_DIRECT request that needs a bounce and is larger than one chunk
 *     -ENOBUFS: no bounce chunk free now (retry after a completion)
 *   uringAvailable() -> true when built with liburing
 *   uringCompletionMode() -> "deferred" | "cooperative" | "signal": how the ring set up by uringInit
 *     hands completions to this thread (see post_deferred), undefined before uringInit
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>
#include "usertgt_native.h"

#ifndef USERTGT_HAVE_LIBURING

static napi_value uring_available(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_get_boolean(env, 0, &v);
  return v;
}

void usertgt_init_uring(napi_env env, napi_value exports) {
  usertgt_export(env, exports, "uringAvailable", uring_available);
}

#else

#include <liburing.h>
#include <sys/eventfd.h>
#include <uv.h>

#define INLINE_IOVS 8
#define ALIGN 4096

typedef struct {
  struct iovec inline_iov[INLINE_IOVS];
  struct iovec *iov; /* the caller's buffers */
  int iovcnt;
  int op;
  int bounce; /* chunk index or -1 */
  struct iovec bounce_iov;
  int linked;    /* a write with a linked fdatasync: two CQEs */
  int write_res; /* the linked write's result, kept until the fdatasync's CQE */
} slot_t;

/* user_data of the first (write) half of a linked FUA write. */
#define LINK_HALF (1ull << 32)

static struct {
  int ready;
  napi_env env;
  struct io_uring ring;
  int efd;
  uv_poll_t poll;
  uv_prepare_t prepare;
  uv_check_t check;
  int deferred;     /* IORING_SETUP_DEFER_TASKRUN: completions posted by post_deferred() */
  const char *mode; /* what uringCompletionMode() reports */
  unsigned pending; /* prepared, not yet submitted */
  unsigned inflight;
  slot_t *slots;
  unsigned nslots;
  napi_ref callback;
  napi_ref ids_ref, results_ref;
  int32_t *ids, *results;
  unsigned capacity; /* length of ids/results */
  napi_async_context async_ctx;
  /* bounce slab */
  char *slab;
  size_t chunk_size;
  unsigned chunks;
  int *free_chunks;
  unsigned nfree;
} E;

/*
 * Submit what was prepared. The eventfd is muted for the duration: what completes inline (a page-cache
 * hit) is reaped by the caller's cq_ready check, not announced through a wake-up of the poll phase.
 */
static void flush_submissions(void) {
  if (E.pending == 0) return;
  io_uring_cq_eventfd_toggle(&E.ring, false);
  int rc;
  /* With deferred task work, the same io_uring_enter also posts the completions that are waiting. */
  do rc = E.deferred ? io_uring_submit_and_get_events(&E.ring) : io_uring_submit(&E.ring);
  while (rc == -EINTR);
  io_uring_cq_eventfd_toggle(&E.ring, true);
  /* io_uring_submit submits all prepared SQEs or fails (EAGAIN/EBUSY: retried next turn). */
  if (rc >= 0) E.pending = 0;
}

/*
 * With IORING_SETUP_DEFER_TASKRUN a finished request is not a CQE yet: the kernel queues its
 * completion work for this thread (setting IORING_SQ_TASKRUN and signalling the eventfd), and it
 * runs only when the thread enters io_uring_enter(GETEVENTS). So completions wake the event loop
 * once, through the eventfd, never by interrupting whatever system call the thread is in (the
 * default task-work notification breaks epoll_wait with EINTR, a second wake-up per I/O), and all
 * that finished since the last look are posted in one go.
 *
 * `drain`: called outside the eventfd's poll callback (before or after the poll phase), so the
 * signal that came with this work is still pending: read it now, or the loop wakes up for it later
 * and finds nothing. The first posting is done with the eventfd muted (it would signal again for
 * the CQEs we are about to reap); work that arrives while muted leaves IORING_SQ_TASKRUN set
 * unannounced, so look once more after unmuting (the kernel sets the flag before it checks the mute
 * bit; the fence orders our unmute before our look) and post it unmuted: what arrives after that is
 * announced. Never more than twice: the flag can stay set with nothing queued (work added while
 * the kernel ran the list sets it after the list was taken, and only running work clears it), and
 * looping on it would spin.
 */
static void get_events(void) {
  int rc;
  do rc = io_uring_get_events(&E.ring);
  while (rc == -EINTR);
}

static int taskrun_pending(void) {
  return (IO_URING_READ_ONCE(*E.ring.sq.kflags) & IORING_SQ_TASKRUN) != 0;
}

static void post_deferred(int drain) {
  if (!E.deferred || !taskrun_pending()) return;
  uint64_t v;
  if (drain) {
    while (read(E.efd, &v, sizeof(v)) < 0 && errno == EINTR) {
    }
  }
  io_uring_cq_eventfd_toggle(&E.ring, false);
  get_events();
  io_uring_cq_eventfd_toggle(&E.ring, true);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (taskrun_pending()) get_events();
}

static void update_ref(void) {
  /* Keep the process alive while I/O is in flight, and only then. */
  if (E.inflight > 0) uv_ref((uv_handle_t *)&E.poll);
  else uv_unref((uv_handle_t *)&E.poll);
}

static void release_slot(slot_t *s, int res) {
  if (s->bounce >= 0) {
    if (s->op == 0 && res > 0) {
      /* Copy the bytes read out of the bounce chunk into the caller's buffers. */
      size_t left = (size_t)res;
      const char *src = s->bounce_iov.iov_base;
      for (int i = 0; i < s->iovcnt && left > 0; i++) {
        size_t n = s->iov[i].iov_len < left ? s->iov[i].iov_len : left;
        memcpy(s->iov[i].iov_base, src, n);
        src += n;
        left -= n;
      }
    }
    E.free_chunks[E.nfree++] = s->bounce;
    s->bounce = -1;
  }
  if (s->iov != s->inline_iov) free(s->iov);
  s->iov = NULL;
}

static void deliver(unsigned count) {
  napi_env env = E.env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value fn, recv, argv[1], result;
  napi_get_reference_value(env, E.callback, &fn);
  napi_get_global(env, &recv);
  napi_create_uint32(env, count, &argv[0]);
  napi_status st = napi_make_callback(env, E.async_ctx, recv, fn, 1, argv, &result);
  if (st == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

/* The result JS sees for a write linked to an fdatasync, from both CQEs. */
static int linked_result(int write_res, int sync_res) {
  if (write_res < 0) return write_res;
  /* A short write breaks the link (the sync is cancelled): JS writes the rest, again with FUA. */
  if (sync_res == -ECANCELED) return write_res;
  return sync_res < 0 ? sync_res : write_res;
}

/*
 * Deliver every completion to JS, in batches of at most `capacity`. Called from the eventfd's
 * callback (which has read the signal) or after posting: signals raised while JS ran are drained.
 */
static void reap(void) {
  for (int drain = 0;; drain = 1) {
    post_deferred(drain);
    unsigned count = 0, seen = 0, head;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&E.ring, head, cqe) {
      if (count == E.capacity) break;
      seen++;
      unsigned slot = (unsigned)(cqe->user_data & 0xffffffffu);
      slot_t *s = &E.slots[slot];
      if (cqe->user_data & LINK_HALF) {
        s->write_res = cqe->res;
        continue;
      }
      int res = cqe->res;
      if (s->linked) {
        res = linked_result(s->write_res, res);
        s->linked = 0;
      }
      release_slot(s, res);
      E.ids[count] = (int32_t)slot;
      E.results[count] = res;
      count++;
    }
    if (seen == 0) break;
    io_uring_cq_advance(&E.ring, seen);
    E.inflight -= seen;
    update_ref();
    if (count > 0) deliver(count);
    /* JS may have submitted more in the callback; submit before looking for further CQEs. */
    flush_submissions();
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  (void)h;
  (void)status;
  (void)events;
  uint64_t v;
  while (read(E.efd, &v, sizeof(v)) < 0 && errno == EINTR) {
  }
  reap();
}

/* Before the loop blocks: submit, and deliver what completed while the eventfd was muted. */
static void on_prepare(uv_prepare_t *h) {
  (void)h;
  flush_submissions();
  post_deferred(1);
  if (io_uring_cq_ready(&E.ring) > 0) reap();
}

/*
 * After the poll phase: submit what this turn queued, and deliver what completed inline during the
 * submission (page-cache hits) without waiting for the eventfd's round trip through epoll.
 */
static void on_check(uv_check_t *h) {
  (void)h;
  flush_submissions();
  post_deferred(1);
  if (io_uring_cq_ready(&E.ring) > 0) reap();
}

static void cleanup(void *arg) {
  (void)arg;
  if (!E.ready) return;
  E.ready = 0;
  uv_poll_stop(&E.poll);
  uv_prepare_stop(&E.prepare);
  uv_check_stop(&E.check);
  uv_close((uv_handle_t *)&E.poll, NULL);
  uv_close((uv_handle_t *)&E.prepare, NULL);
  uv_close((uv_handle_t *)&E.check, NULL);
  io_uring_queue_exit(&E.ring);
  close(E.efd);
}

static napi_value int_result(napi_env env, int v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

static int typed_i32(napi_env env, napi_value v, int32_t **data, size_t *len, napi_ref *ref) {
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  void *ptr;
  if (napi_get_typedarray_info(env, v, &type, len, &ptr, &ab, &off) != napi_ok || type != napi_int32_array)
    return -1;
  *data = ptr;
  return napi_create_reference(env, v, 1, ref) == napi_ok ? 0 : -1;
}

static napi_value uring_init(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  uint32_t slots, chunk_size, chunks;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6 ||
      napi_get_value_uint32(env, argv[0], &slots) != napi_ok ||
      napi_get_value_uint32(env, argv[4], &chunk_size) != napi_ok ||
      napi_get_value_uint32(env, argv[5], &chunks) != napi_ok || slots == 0 || slots > 65536 ||
      chunk_size % ALIGN != 0) {
    napi_throw_type_error(env, NULL, "uringInit(slots, onComplete, ids, results, chunkSize, chunks)");
    return NULL;
  }
  if (E.ready) return int_result(env, -EBUSY); /* one ring per process */
  size_t nids, nres;
  if (typed_i32(env, argv[2], &E.ids, &nids, &E.ids_ref) != 0 ||
      typed_i32(env, argv[3], &E.results, &nres, &E.results_ref) != 0 || nids != nres || nids == 0) {
    napi_throw_type_error(env, NULL, "uringInit: ids and results must be Int32Arrays of one length");
    return NULL;
  }
  E.capacity = (unsigned)nids;
  unsigned sq = slots < 256 ? slots : 256;
  /*
   * Only this thread submits and reaps, so the ring may defer completion work to it (Linux 6.1);
   * older kernels get cooperative task work (5.19), then the default. No flag changes what a
   * request does, only how its completion reaches the ring.
   */
  static const unsigned setups[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
      IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
      0,
  };
  static const char *const modes[] = {"deferred", "cooperative", "signal"};
  int rc = -EINVAL;
  for (unsigned i = 0; i < sizeof(setups) / sizeof(setups[0]) && rc == -EINVAL; i++) {
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE | setups[i];
    p.cq_entries = slots;
    rc = io_uring_queue_init_params(sq, &E.ring, &p);
    if (rc == 0) {
      E.deferred = (setups[i] & IORING_SETUP_DEFER_TASKRUN) != 0;
      E.mode = modes[i];
    }
  }
  if (rc < 0) return int_result(env, rc);
  E.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (E.efd < 0) {
    rc = -errno;
    io_uring_queue_exit(&E.ring);
    return int_result(env, rc);
  }
  rc = io_uring_register_eventfd(&E.ring, E.efd);
  if (rc < 0) {
    close(E.efd);
    io_uring_queue_exit(&E.ring);
    return int_result(env, rc);
  }
  E.slots = calloc(slots, sizeof(slot_t));
  if (E.slots == NULL) {
    close(E.efd);
    io_uring_queue_exit(&E.ring);
    return int_result(env, -ENOMEM);
  }
  for (unsigned i = 0; i < slots; i++) E.slots[i].bounce = -1;
  E.nslots = slots;
  E.chunk_size = chunk_size;
  E.chunks = chunks;
  napi_create_reference(env, argv[1], 1, &E.callback);
  napi_value name;
  napi_create_string_utf8(env, "usertgt.uring", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &E.async_ctx);
  struct uv_loop_s *loop;
  napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, &E.poll, E.efd);
  uv_poll_start(&E.poll, UV_READABLE, on_poll);
  uv_prepare_init(loop, &E.prepare);
  uv_prepare_start(&E.prepare, on_prepare);
  uv_unref((uv_handle_t *)&E.prepare);
  uv_check_init(loop, &E.check);
  uv_check_start(&E.check, on_check);
  uv_unref((uv_handle_t *)&E.check);
  E.env = env;
  E.ready = 1;
  update_ref();
  napi_add_env_cleanup_hook(env, cleanup, NULL);
  return int_result(env, 0);
}

static int bounce_slab(void) {
  if (E.slab != NULL) return 0;
  if (E.chunks == 0) return -ENOBUFS;
  void *p;
  if (posix_memalign(&p, ALIGN, E.chunk_size * E.chunks) != 0) return -ENOMEM;
  E.free_chunks = malloc(sizeof(int) * E.chunks);
  if (E.free_chunks == NULL) {
    free(p);
    return -ENOMEM;
  }
  E.slab = p;
  for (unsigned i = 0; i < E.chunks; i++) E.free_chunks[i] = (int)(E.chunks - 1 - i);
  E.nfree = E.chunks;
  return 0;
}

static napi_value uring_submit(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  uint32_t slot, op, flags;
  int32_t fd;
  int64_t offset;
  if (!E.ready) return int_result(env, -ENXIO);
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6 ||
      napi_get_value_uint32(env, argv[0], &slot) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &op) != napi_ok ||
      napi_get_value_int32(env, argv[2], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[3], &offset) != napi_ok ||
      napi_get_value_uint32(env, argv[5], &flags) != napi_ok || slot >= E.nslots || op > 2 ||
      offset < 0) {
    napi_throw_type_error(env, NULL, "uringSubmit(slot, op, fd, offset, bufs, flags)");
    return NULL;
  }
  slot_t *s = &E.slots[slot];
  s->op = (int)op;
  s->iovcnt = 0;
  s->iov = s->inline_iov;
  s->bounce = -1;
  size_t total = 0;
  int misaligned = 0;
  if (op != 2) {
    uint32_t n;
    if (napi_get_array_length(env, argv[4], &n) != napi_ok || n == 0) {
      napi_throw_type_error(env, NULL, "uringSubmit: bufs must be a non-empty array of Buffers");
      return NULL;
    }
    if (n > INLINE_IOVS) {
      s->iov = malloc(sizeof(struct iovec) * n);
      if (s->iov == NULL) return int_result(env, -ENOMEM);
    }
    for (uint32_t i = 0; i < n; i++) {
      napi_value b;
      void *data;
      size_t len;
      if (napi_get_element(env, argv[4], i, &b) != napi_ok ||
          napi_get_buffer_info(env, b, &data, &len) != napi_ok) {
        release_slot(s, 0);
        napi_throw_type_error(env, NULL, "uringSubmit: bufs must be Buffers");
        return NULL;
      }
      s->iov[i].iov_base = data;
      s->iov[i].iov_len = len;
      total += len;
      if (((uintptr_t)data | len) & (ALIGN - 1)) misaligned = 1;
    }
    s->iovcnt = (int)n;
  }
  const struct iovec *iov = s->iov;
  int iovcnt = s->iovcnt;
  if ((flags & 2) && op != 2 && misaligned) {
    if (total > E.chunk_size) {
      release_slot(s, 0);
      return int_result(env, -E2BIG);
    }
    int rc = bounce_slab();
    if (rc == 0 && E.nfree == 0) rc = -ENOBUFS;
    if (rc != 0) {
      release_slot(s, 0);
      return int_result(env, rc);
    }
    s->bounce = E.free_chunks[--E.nfree];
    s->bounce_iov.iov_base = E.slab + (size_t)s->bounce * E.chunk_size;
    s->bounce_iov.iov_len = total;
    if (op == 1) {
      char *dst = s->bounce_iov.iov_base;
      for (int i = 0; i < s->iovcnt; i++) {
        memcpy(dst, s->iov[i].iov_base, s->iov[i].iov_len);
        dst += s->iov[i].iov_len;
      }
    }
    iov = &s->bounce_iov;
    iovcnt = 1;
  }
  /*
   * FUA: an O_DIRECT write carries RWF_DSYNC (the block layer sends it as a FUA write). A buffered
   * write is followed by a linked fdatasync instead: io_uring runs buffered writes to one file one at
   * a time (hashed by inode), so RWF_DSYNC on them would allow a single sync in flight, while linked
   * syncs run side by side and the file system commits them together. A block device's buffered
   * writes are not hashed (io_uring hashes regular files only), and RWF_DSYNC on one writes back and
   * waits for just its range, then flushes the device's cache (blkdev_fsync), where an fdatasync
   * would write back every dirty page of the device.
   */
  int linked = op == 1 && (flags & 1) && !(flags & 6);
  unsigned need = linked ? 2 : 1;
  if (io_uring_sq_space_left(&E.ring) < need) flush_submissions();
  if (io_uring_sq_space_left(&E.ring) < need) {
    release_slot(s, 0);
    return int_result(env, -EAGAIN);
  }
  struct io_uring_sqe *sqe = io_uring_get_sqe(&E.ring);
  if (op == 0) {
    io_uring_prep_readv2(sqe, fd, iov, iovcnt, (__u64)offset, 0);
  } else if (op == 1) {
    io_uring_prep_writev2(sqe, fd, iov, iovcnt, (__u64)offset, (flags & 1) && !linked ? RWF_DSYNC : 0);
  } else {
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
  }
  s->linked = linked;
  if (linked) {
    s->write_res = 0;
    io_uring_sqe_set_flags(sqe, IOSQE_IO_LINK);
    io_uring_sqe_set_data64(sqe, LINK_HALF | slot);
    sqe = io_uring_get_sqe(&E.ring);
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
  }
  io_uring_sqe_set_data64(sqe, slot);
  E.pending += need;
  E.inflight += need;
  update_ref();
  return int_result(env, 0);
}

static napi_value uring_available(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_get_boolean(env, 1, &v);
  return v;
}

static napi_value uring_completion_mode(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  if (!E.ready || E.mode == NULL) napi_get_undefined(env, &v);
  else napi_create_string_utf8(env, E.mode, NAPI_AUTO_LENGTH, &v);
  return v;
}

void usertgt_init_uring(napi_env env, napi_value exports) {
  usertgt_export(env, exports, "uringAvailable", uring_available);
  usertgt_export(env, exports, "uringCompletionMode", uring_completion_mode);
  usertgt_export(env, exports, "uringInit", uring_init);
  usertgt_export(env, exports, "uringSubmit", uring_submit);
}

#endif
