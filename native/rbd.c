/*
 * usertgt's librbd binding (Ceph RADOS block devices) for the TCMUR `rbd` handler.
 *
 * I/O is librbd's asynchronous API: submit() queues the request and returns at once; before the event
 * loop next waits, the turn's requests go to this image's submitter thread with one signal, and it
 * calls rbd_aio_* for each (submitter_main: librbd's own hand-off is off). librbd completes
 * requests on its own threads; those callbacks only append the request to a mutex-protected list and
 * uv_async_send(), so the event loop wakes once for a batch and calls the JavaScript dispatcher once
 * with the whole batch, in a Float64Array reused for every call (through napi_make_callback, so
 * promise continuations run right after). Request structs are reused too: no allocation of ours per
 * I/O (librbd allocates its own completion).
 * Calls that block inside librbd (connect, open, lock, close, size refresh) run as napi async work on
 * the libuv thread pool.
 *
 *   open({pool, namespace, image, conf, id, osdOpTimeout, readOnly}, dispatcher) -> Promise<handle>
 *       dispatcher(events: Float64Array): (tag, ret, mismatchOffset) triples, one per completed
 *       request (ret < 0: -errno), ended by a tag of 0; tag -1: the image header changed (resize,
 *       lock owner). The array is reused: it is valid only during the call.
 *   submit(handle, tag, op, offset, length, bufs | buf, writeBuf) -> 0 or -errno (bad arguments;
 *       librbd's own refusal arrives as the request's completion)
 *       op 0 readv(bufs), 1 writev(bufs), 2 flush, 3 discard, 4 writesame(buf), 5 compare-and-write
 *       (buf: compare data, writeBuf: data to write; mismatchOffset set on -EILSEQ).
 *   size(handle) -> Promise<number>; lock(handle, acquire) -> Promise<void>;
 *   lockOwner(handle) -> Promise<boolean>; close(handle) -> Promise<void>.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <node_api.h>
#include <uv.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#define INLINE_IOV 8
/* Completions handed to JavaScript per dispatcher call (the events array is reused). */
#define EVENTS_MAX 256
/* Request structs kept for reuse per image (more in flight are allocated and freed). */
#define FREE_MAX 256

typedef struct image_s image_t;

typedef struct req_s {
  struct req_s *next;
  image_t *img;
  rbd_completion_t comp;
  double tag;
  int64_t ret;
  uint64_t mismatch;
  /* What the submitter thread hands to librbd (filled on the event loop from the JS arguments). */
  int op;
  int iovcnt;
  uint64_t off, len;
  void *a, *b;
  size_t alen;
  struct iovec *iov;
  struct iovec inline_iov[INLINE_IOV];
} req_t;

struct image_s {
  rados_t cluster;
  rados_ioctx_t io;
  rbd_image_t image;
  int connected, has_io, has_image, watching;
  uint64_t watch_handle;
  uv_async_t async;
  pthread_mutex_t mu;
  req_t *done_head, *done_tail;
  int updated;
  req_t *free_list;
  int free_count;
  napi_ref events_ref;
  double *events;
  napi_env env;
  napi_ref dispatcher;
  napi_async_context actx;
  char *pool, *ns, *name, *conf, *id, *timeout;
  int read_only;
  int closed;
  /* Requests submitted and not yet handed back (loop thread only): the async handle keeps the
   * loop alive exactly while this is non-zero. */
  int64_t inflight;
  /* Requests taken in this event-loop turn (loop thread only), handed to the submitter thread in one
   * go by the idle handle `kick` before the loop next waits. */
  req_t *turn_head, *turn_tail;
  uv_idle_t kick;
  /* The submitter thread's queue (under sub_mu). */
  pthread_t submitter;
  int submitter_running;
  pthread_mutex_t sub_mu;
  pthread_cond_t sub_cv;
  req_t *sub_head, *sub_tail;
  int sub_stop;
  /* Set while the submitter has requests taken off the queue and not yet in librbd; sub_idle_cv is
   * broadcast when it clears. */
  int sub_busy;
  pthread_cond_t sub_idle_cv;
};

enum work_kind { W_OPEN, W_SIZE, W_LOCK, W_UNLOCK, W_OWNER, W_CLOSE };

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  image_t *img;
  enum work_kind kind;
  int ret;
  char step[64];
  uint64_t value;
} work_t;

static void drain(image_t *img);

static napi_value make_error(napi_env env, const char *step, int ret) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", step, strerror(-ret));
  napi_value m, err, code;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &err);
  napi_create_int32(env, ret, &code);
  napi_set_named_property(env, err, "errno", code);
  return err;
}

/*
 * On a librbd thread. uv_async_send() wakes the loop once however many completions arrive before it
 * runs (they arrive about four per wake at queue depth 32 here). Holding completions back for bigger
 * batches was measured (docs/benchmarks-ceph.md) and not kept: the timer it needs costs more at low
 * rates than it saves at high ones.
 */
static void push_done(image_t *img, req_t *r) {
  pthread_mutex_lock(&img->mu);
  r->next = NULL;
  if (img->done_tail) img->done_tail->next = r;
  else img->done_head = r;
  img->done_tail = r;
  pthread_mutex_unlock(&img->mu);
  uv_async_send(&img->async);
}

static void on_complete(rbd_completion_t c, void *arg) {
  req_t *r = arg;
  r->ret = rbd_aio_get_return_value(c);
  push_done(r->img, r);
}

static void on_update(void *arg) {
  image_t *img = arg;
  pthread_mutex_lock(&img->mu);
  img->updated = 1;
  pthread_mutex_unlock(&img->mu);
  uv_async_send(&img->async);
}

/* Hand `count` (tag, ret, mismatch) triples to JavaScript in one call, so every promise they settle
 * runs in one microtask checkpoint (and the responses leave in one event-loop turn). */
static void call_dispatcher(image_t *img, napi_value fn, napi_value recv, napi_value events) {
  napi_env env = img->env;
  napi_value result;
  if (napi_make_callback(env, img->actx, recv, fn, 1, &events, &result) != napi_ok) {
    napi_value exc;
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_get_and_clear_last_exception(env, &exc);
      napi_fatal_exception(env, exc);
    }
  }
}

static void release_req(image_t *img, req_t *r) {
  if (r->iov != r->inline_iov) free(r->iov);
  if (img->free_count < FREE_MAX) {
    r->next = img->free_list;
    img->free_list = r;
    img->free_count++;
  } else {
    free(r);
  }
}

static req_t *take_req(image_t *img) {
  req_t *r = img->free_list;
  if (r) {
    img->free_list = r->next;
    img->free_count--;
  } else if (!(r = malloc(sizeof *r))) {
    return NULL;
  }
  r->next = NULL;
  r->img = img;
  r->ret = 0;
  r->mismatch = 0;
  r->comp = NULL;
  r->iov = r->inline_iov;
  return r;
}

/* One request more or fewer in flight (loop thread): the async handle keeps the loop alive meanwhile. */
static void inflight_up(image_t *img) {
  if (img->inflight++ == 0) uv_ref((uv_handle_t *)&img->async);
}

static void inflight_down(image_t *img) {
  if (--img->inflight == 0) uv_unref((uv_handle_t *)&img->async);
}

/* On the event loop: hand every completed request (and a header change: tag -1) to JavaScript,
 * EVENTS_MAX at a time through one reused Float64Array. */
static void drain(image_t *img) {
  pthread_mutex_lock(&img->mu);
  req_t *list = img->done_head;
  img->done_head = img->done_tail = NULL;
  int updated = img->updated;
  img->updated = 0;
  pthread_mutex_unlock(&img->mu);
  if (!list && !updated) return;
  napi_env env = img->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value fn, recv, events;
  napi_get_reference_value(env, img->dispatcher, &fn);
  napi_get_reference_value(env, img->events_ref, &events);
  napi_get_global(env, &recv); /* napi_make_callback needs an object receiver */
  double *triples = img->events;
  while (list || updated) {
    size_t i = 0;
    while (list && i < EVENTS_MAX * 3) {
      req_t *r = list;
      list = r->next;
      triples[i++] = r->tag;
      triples[i++] = (double)r->ret;
      triples[i++] = (double)r->mismatch;
      if (r->comp) rbd_aio_release(r->comp);
      release_req(img, r);
      inflight_down(img);
    }
    if (!list && updated && i < EVENTS_MAX * 3) {
      triples[i++] = -1;
      triples[i++] = 0;
      triples[i++] = 0;
      updated = 0;
    }
    if (i < EVENTS_MAX * 3) triples[i] = 0; /* end marker: tag 0 is never used */
    call_dispatcher(img, fn, recv, events);
  }
  napi_close_handle_scope(env, scope);
}

static void on_async(uv_async_t *a) { drain(a->data); }

/*
 * The submitter thread: hands each request to librbd. librbd runs with rbd_non_blocking_aio=false,
 * so rbd_aio_* does its submission work on the calling thread, which may wait (an image refresh);
 * that thread is this one, never the event loop. With librbd's default (non-blocking) every rbd_aio_*
 * call on the event loop signalled librbd's io_context thread, one wake-up and usually two context
 * switches per request; here the event loop signals this thread once per turn for the whole batch.
 */
static int submit_one(image_t *img, req_t *r) {
  int ret = rbd_aio_create_completion(r, on_complete, &r->comp);
  if (ret < 0) {
    r->comp = NULL;
    return ret;
  }
  switch (r->op) {
    case 0:
      ret = rbd_aio_readv(img->image, r->iov, r->iovcnt, r->off, r->comp);
      break;
    case 1:
      ret = rbd_aio_writev(img->image, r->iov, r->iovcnt, r->off, r->comp);
      break;
    case 2:
      ret = rbd_aio_flush(img->image, r->comp);
      break;
    case 3:
      ret = rbd_aio_discard(img->image, r->off, r->len, r->comp);
      break;
    case 4:
      ret = rbd_aio_writesame(img->image, r->off, r->len, r->a, r->alen, r->comp, 0);
      break;
    case 5:
      ret = (int)rbd_aio_compare_and_write(img->image, r->off, r->len, r->a, r->b, r->comp, &r->mismatch, 0);
      break;
    default:
      ret = -EINVAL;
  }
  if (ret < 0) {
    rbd_aio_release(r->comp);
    r->comp = NULL;
  }
  return ret;
}

static void *submitter_main(void *arg) {
  image_t *img = arg;
  pthread_setname_np(pthread_self(), "rbd-submit");
  pthread_mutex_lock(&img->sub_mu);
  for (;;) {
    while (!img->sub_head && !img->sub_stop) pthread_cond_wait(&img->sub_cv, &img->sub_mu);
    req_t *list = img->sub_head;
    img->sub_head = img->sub_tail = NULL;
    if (!list && img->sub_stop) break; /* stop only once everything queued was submitted */
    img->sub_busy = 1;
    pthread_mutex_unlock(&img->sub_mu);
    while (list) {
      req_t *r = list;
      list = r->next;
      int ret = submit_one(img, r);
      if (ret < 0) {
        /* librbd refused it: it completes at once with that error. */
        r->ret = ret;
        push_done(img, r);
      }
    }
    pthread_mutex_lock(&img->sub_mu);
    img->sub_busy = 0;
    pthread_cond_broadcast(&img->sub_idle_cv);
  }
  pthread_mutex_unlock(&img->sub_mu);
  return NULL;
}

/* Loop thread: move this turn's requests to the submitter thread, with one signal. */
static void hand_over(image_t *img) {
  req_t *list = img->turn_head;
  if (!list) return;
  req_t *tail = img->turn_tail;
  img->turn_head = img->turn_tail = NULL;
  pthread_mutex_lock(&img->sub_mu);
  if (img->sub_tail) img->sub_tail->next = list;
  else img->sub_head = list;
  img->sub_tail = tail;
  pthread_cond_signal(&img->sub_cv);
  pthread_mutex_unlock(&img->sub_mu);
}

/* An idle handle runs before the loop next polls (and keeps that poll from blocking while active), so
 * every request taken in a turn (socket reads, completions, timers, setImmediate) is handed over
 * before the loop sleeps, all together. */
static void on_kick(uv_idle_t *h) {
  uv_idle_stop(h);
  hand_over(h->data);
}

/* Off the loop: wait until every request handed over is in librbd (releasing the lock must come after
 * the writes taken before it, as when rbd_aio_* ran on the loop). */
static void wait_submitted(image_t *img) {
  if (!img->submitter_running) return;
  pthread_mutex_lock(&img->sub_mu);
  while (img->sub_head || img->sub_busy) pthread_cond_wait(&img->sub_idle_cv, &img->sub_mu);
  pthread_mutex_unlock(&img->sub_mu);
}

static void stop_submitter(image_t *img) {
  if (!img->submitter_running) return;
  pthread_mutex_lock(&img->sub_mu);
  img->sub_stop = 1;
  pthread_cond_signal(&img->sub_cv);
  pthread_mutex_unlock(&img->sub_mu);
  pthread_join(img->submitter, NULL);
  img->submitter_running = 0;
}

static void free_image(image_t *img) {
  while (img->free_list) {
    req_t *r = img->free_list;
    img->free_list = r->next;
    free(r);
  }
  free(img->pool);
  free(img->ns);
  free(img->name);
  free(img->conf);
  free(img->id);
  free(img->timeout);
  pthread_mutex_destroy(&img->mu);
  pthread_mutex_destroy(&img->sub_mu);
  pthread_cond_destroy(&img->sub_cv);
  pthread_cond_destroy(&img->sub_idle_cv);
  free(img);
}

static void on_kick_closed(uv_handle_t *h) { free_image(h->data); }

/* The async handle closes first, then the idle handle, then the image is freed. */
static void on_async_closed(uv_handle_t *h) {
  image_t *img = h->data;
  uv_close((uv_handle_t *)&img->kick, on_kick_closed);
}

static void disconnect(image_t *img) {
  stop_submitter(img); /* everything handed over is submitted before the image closes */
  if (img->watching) rbd_update_unwatch(img->image, img->watch_handle);
  img->watching = 0;
  if (img->has_image) rbd_close(img->image);
  img->has_image = 0;
  if (img->has_io) rados_ioctx_destroy(img->io);
  img->has_io = 0;
  if (img->connected) rados_shutdown(img->cluster);
  img->connected = 0;
}

static void work_execute(napi_env env, void *data) {
  (void)env;
  work_t *w = data;
  image_t *img = w->img;
  int r = 0;
  switch (w->kind) {
    case W_OPEN: {
      snprintf(w->step, sizeof w->step, "rados_create");
      if ((r = rados_create(&img->cluster, img->id)) < 0) break;
      img->connected = 0;
      snprintf(w->step, sizeof w->step, "reading the Ceph configuration");
      if ((r = rados_conf_read_file(img->cluster, img->conf)) < 0) {
        rados_shutdown(img->cluster);
        break;
      }
      /* No client-side write-back cache: a write is acknowledged when the cluster has it, so a
       * host that fails over to another gateway (or a gateway killed) loses nothing. */
      rados_conf_set(img->cluster, "rbd_cache", "false");
      /* UNMAP promises zeroes afterwards (LBPRZ): discards smaller than an object are carried out
       * as zeroing, not skipped (Ceph 16 skips them by default). */
      rados_conf_set(img->cluster, "rbd_skip_partial_discard", "false");
      /* Submission work on the caller's thread: the submitter thread (submitter_main). */
      rados_conf_set(img->cluster, "rbd_non_blocking_aio", "false");
      if (img->timeout) {
        /* Every wait on the cluster ends: OSD ops, monitor commands and the initial connect. */
        rados_conf_set(img->cluster, "rados_osd_op_timeout", img->timeout);
        rados_conf_set(img->cluster, "rados_mon_op_timeout", img->timeout);
        rados_conf_set(img->cluster, "client_mount_timeout", img->timeout);
      }
      snprintf(w->step, sizeof w->step, "connecting to the cluster");
      if ((r = rados_connect(img->cluster)) < 0) {
        rados_shutdown(img->cluster);
        break;
      }
      img->connected = 1;
      snprintf(w->step, sizeof w->step, "opening pool %.40s", img->pool);
      if ((r = rados_ioctx_create(img->cluster, img->pool, &img->io)) < 0) break;
      img->has_io = 1;
      if (img->ns) rados_ioctx_set_namespace(img->io, img->ns);
      snprintf(w->step, sizeof w->step, "opening image %.40s", img->name);
      r = img->read_only ? rbd_open_read_only(img->io, img->name, &img->image, NULL)
                         : rbd_open(img->io, img->name, &img->image, NULL);
      if (r < 0) break;
      img->has_image = 1;
      snprintf(w->step, sizeof w->step, "reading the image size");
      if ((r = rbd_get_size(img->image, &w->value)) < 0) break;
      snprintf(w->step, sizeof w->step, "watching the image header");
      if ((r = rbd_update_watch(img->image, &img->watch_handle, on_update, img)) < 0) break;
      img->watching = 1;
      snprintf(w->step, sizeof w->step, "starting the submitter thread");
      if ((r = -pthread_create(&img->submitter, NULL, submitter_main, img)) < 0) break;
      img->submitter_running = 1;
      break;
    }
    case W_SIZE:
      snprintf(w->step, sizeof w->step, "rbd_get_size");
      r = rbd_get_size(img->image, &w->value);
      break;
    case W_LOCK:
      snprintf(w->step, sizeof w->step, "acquiring the exclusive lock");
      r = rbd_lock_acquire(img->image, RBD_LOCK_MODE_EXCLUSIVE);
      break;
    case W_UNLOCK:
      wait_submitted(img);
      snprintf(w->step, sizeof w->step, "releasing the exclusive lock");
      r = rbd_lock_release(img->image);
      break;
    case W_OWNER: {
      int owner = 0;
      snprintf(w->step, sizeof w->step, "rbd_is_exclusive_lock_owner");
      r = rbd_is_exclusive_lock_owner(img->image, &owner);
      w->value = (uint64_t)owner;
      break;
    }
    case W_CLOSE:
      disconnect(img);
      break;
  }
  w->ret = r;
}

static void work_complete(napi_env env, napi_status status, void *data) {
  work_t *w = data;
  image_t *img = w->img;
  int r = status == napi_ok ? w->ret : -ECANCELED;
  if (w->kind == W_OPEN && r < 0) {
    disconnect(img);
    img->closed = 1;
  }
  if (w->kind == W_CLOSE || (w->kind == W_OPEN && r < 0)) {
    drain(img);
    napi_delete_reference(env, img->dispatcher);
    napi_delete_reference(env, img->events_ref);
    napi_async_destroy(env, img->actx);
    uv_idle_stop(&img->kick);
    uv_close((uv_handle_t *)&img->async, on_async_closed);
  }
  if (r < 0) {
    napi_reject_deferred(env, w->deferred, make_error(env, w->step, r));
  } else {
    napi_value v;
    switch (w->kind) {
      case W_OPEN: {
        napi_value handle, size;
        napi_create_external(env, img, NULL, NULL, &handle);
        napi_create_object(env, &v);
        napi_create_double(env, (double)w->value, &size);
        napi_set_named_property(env, v, "handle", handle);
        napi_set_named_property(env, v, "size", size);
        break;
      }
      case W_SIZE:
        napi_create_double(env, (double)w->value, &v);
        break;
      case W_OWNER:
        napi_get_boolean(env, w->value != 0, &v);
        break;
      default:
        napi_get_undefined(env, &v);
    }
    napi_resolve_deferred(env, w->deferred, v);
  }
  napi_delete_async_work(env, w->work);
  free(w);
}

static napi_value queue_work(napi_env env, image_t *img, enum work_kind kind) {
  work_t *w = calloc(1, sizeof *w);
  napi_value promise, name;
  w->img = img;
  w->kind = kind;
  napi_create_promise(env, &w->deferred, &promise);
  napi_create_string_utf8(env, "usertgt:rbd", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, work_execute, work_complete, w, &w->work);
  napi_queue_async_work(env, w->work);
  return promise;
}

static char *get_string(napi_env env, napi_value obj, const char *key) {
  napi_value v;
  napi_valuetype t;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return NULL;
  napi_typeof(env, v, &t);
  if (t != napi_string) return NULL;
  size_t len;
  napi_get_value_string_utf8(env, v, NULL, 0, &len);
  char *s = malloc(len + 1);
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "open(options, dispatcher)");
    return NULL;
  }
  image_t *img = calloc(1, sizeof *img);
  img->env = env;
  img->pool = get_string(env, argv[0], "pool");
  img->ns = get_string(env, argv[0], "namespace");
  img->name = get_string(env, argv[0], "image");
  img->conf = get_string(env, argv[0], "conf");
  img->id = get_string(env, argv[0], "id");
  img->timeout = get_string(env, argv[0], "osdOpTimeout");
  napi_value ro;
  bool read_only = false;
  if (napi_get_named_property(env, argv[0], "readOnly", &ro) == napi_ok) napi_get_value_bool(env, ro, &read_only);
  img->read_only = read_only;
  if (!img->pool || !img->name) {
    free_image(img);
    napi_throw_type_error(env, NULL, "open: pool and image are required strings");
    return NULL;
  }
  pthread_mutex_init(&img->mu, NULL);
  pthread_mutex_init(&img->sub_mu, NULL);
  pthread_cond_init(&img->sub_cv, NULL);
  pthread_cond_init(&img->sub_idle_cv, NULL);
  napi_create_reference(env, argv[1], 1, &img->dispatcher);
  napi_value resource_name;
  napi_create_string_utf8(env, "usertgt:rbd-io", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &img->actx);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  napi_value events_ab, events;
  napi_create_arraybuffer(env, EVENTS_MAX * 3 * sizeof(double), (void **)&img->events, &events_ab);
  napi_create_typedarray(env, napi_float64_array, EVENTS_MAX * 3, events_ab, 0, &events);
  napi_create_reference(env, events, 1, &img->events_ref);
  uv_async_init(loop, &img->async, on_async);
  img->async.data = img;
  uv_unref((uv_handle_t *)&img->async); /* referenced only while requests are in flight */
  uv_idle_init(loop, &img->kick);
  img->kick.data = img;
  uv_unref((uv_handle_t *)&img->kick); /* the async handle's reference keeps the loop alive */
  return queue_work(env, img, W_OPEN);
}

static image_t *get_image(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "not an rbd image handle");
    return NULL;
  }
  image_t *img = p;
  if (img->closed) {
    napi_throw_error(env, NULL, "rbd image is closed");
    return NULL;
  }
  return img;
}

/* Fill r->iov from an array of Buffers; returns the count or -1. */
static int buffers_to_iov(napi_env env, napi_value arr, req_t *r) {
  uint32_t n = 0;
  bool is_array = false;
  napi_is_array(env, arr, &is_array);
  if (!is_array) return -1;
  napi_get_array_length(env, arr, &n);
  r->iov = n <= INLINE_IOV ? r->inline_iov : calloc(n, sizeof(struct iovec));
  if (!r->iov) {
    r->iov = r->inline_iov;
    return -1;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value b;
    void *data;
    size_t len;
    napi_get_element(env, arr, i, &b);
    if (napi_get_buffer_info(env, b, &data, &len) != napi_ok) return -1;
    r->iov[i].iov_base = data;
    r->iov[i].iov_len = len;
  }
  return (int)n;
}

static napi_value js_submit(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5) {
    napi_throw_type_error(env, NULL, "submit(handle, tag, op, offset, length, ...)");
    return NULL;
  }
  image_t *img = get_image(env, argv[0]);
  if (!img) return NULL;
  double tag, offset_d, length_d;
  int32_t op;
  napi_get_value_double(env, argv[1], &tag);
  napi_get_value_int32(env, argv[2], &op);
  napi_get_value_double(env, argv[3], &offset_d);
  napi_get_value_double(env, argv[4], &length_d);
  req_t *r = take_req(img);
  int ret = 0;
  if (!r) {
    ret = -ENOMEM;
    goto out;
  }
  r->tag = tag;
  r->op = op;
  r->off = (uint64_t)offset_d;
  r->len = (uint64_t)length_d;
  size_t blen = 0;
  /* The arguments are checked here, on the loop thread: bad ones fail at once. The buffers stay
   * referenced by the JavaScript caller until the request completes. */
  switch (op) {
    case 0:
    case 1:
      if (argc < 6 || (r->iovcnt = buffers_to_iov(env, argv[5], r)) < 0) ret = -EINVAL;
      break;
    case 2:
    case 3:
      break;
    case 4:
      if (argc < 6 || napi_get_buffer_info(env, argv[5], &r->a, &r->alen) != napi_ok || r->alen == 0)
        ret = -EINVAL;
      break;
    case 5:
      if (argc < 7 || napi_get_buffer_info(env, argv[5], &r->a, &r->alen) != napi_ok ||
          napi_get_buffer_info(env, argv[6], &r->b, &blen) != napi_ok || r->alen < r->len || blen < r->len)
        ret = -EINVAL;
      break;
    default:
      ret = -EINVAL;
  }
  if (ret < 0) {
    release_req(img, r);
    goto out;
  }
  inflight_up(img);
  if (img->turn_tail) img->turn_tail->next = r;
  else img->turn_head = r;
  img->turn_tail = r;
  uv_idle_start(&img->kick, on_kick);
out:;
  napi_value v;
  napi_create_int32(env, ret, &v);
  return v;
}

static napi_value handle_work(napi_env env, napi_callback_info info, enum work_kind kind) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "expected an rbd image handle");
    return NULL;
  }
  image_t *img = get_image(env, argv[0]);
  if (!img) return NULL;
  if (kind == W_LOCK && argc >= 2) {
    bool acquire = true;
    napi_get_value_bool(env, argv[1], &acquire);
    if (!acquire) kind = W_UNLOCK;
  }
  /* Requests taken before this call go to librbd before it: the close (disconnect stops the
   * submitter after them) and the lock release (wait_submitted) come after them. */
  hand_over(img);
  if (kind == W_CLOSE) img->closed = 1;
  return queue_work(env, img, kind);
}

static napi_value js_size(napi_env env, napi_callback_info info) { return handle_work(env, info, W_SIZE); }
static napi_value js_lock(napi_env env, napi_callback_info info) { return handle_work(env, info, W_LOCK); }
static napi_value js_owner(napi_env env, napi_callback_info info) { return handle_work(env, info, W_OWNER); }
static napi_value js_close(napi_env env, napi_callback_info info) { return handle_work(env, info, W_CLOSE); }

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
      {"submit", NULL, js_submit, NULL, NULL, NULL, napi_default, NULL},
      {"size", NULL, js_size, NULL, NULL, NULL, napi_default, NULL},
      {"lock", NULL, js_lock, NULL, NULL, NULL, napi_default, NULL},
      {"lockOwner", NULL, js_owner, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
