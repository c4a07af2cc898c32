/* A CUDA driver model: a stand-in libcuda.so.1 that CI can run extstream's real
 * backend on (tests/driver/ compiles it; tests/test_driver_seam.py and
 * tests/test_driver_model.py load it through LD_LIBRARY_PATH).
 *
 * It gives the driver functions extstream calls CUDA's C signatures and models
 * what a driver does, as CUDA documents it. Where CUDA says nothing, it models
 * the case that is hardest for extstream: a call that may wait, waits; a call
 * that may fail, fails. Each rule cites its source ("Driver API" is the CUDA
 * Driver API reference, "Guide" the CUDA Programming Guide). The CUDA runtime
 * cannot run on it (cuda.bindings' static cudart needs the driver's private
 * export table): runtime calls fail with cudaErrorCallRequiresNewerDriver.
 *
 * The model:
 * - Devices: FAKE_CUDA_DEVICES physical ones (default 2). cuInit reads
 *   CUDA_VISIBLE_DEVICES, once (the driver enumerates devices at
 *   initialisation; Guide, "CUDA_VISIBLE_DEVICES": "only supported hardware is
 *   visible during initialization"); later changes to it are not seen.
 * - Contexts: one primary context per visible device, retained with
 *   cuDevicePrimaryCtxRetain; a stack of current contexts per thread. A new
 *   thread has none (cuCtxGetDevice: CUDA_ERROR_INVALID_CONTEXT).
 * - Special handles: 0 and 1 (CU_STREAM_LEGACY) name the legacy stream of the
 *   calling thread's current context, 2 (CU_STREAM_PER_THREAD) the per-thread
 *   stream of the calling thread and that context; "if no context is current
 *   to the calling thread, CUDA_ERROR_INVALID_CONTEXT is returned"
 *   (cuStreamGetCtx). The per-thread stream is "local to both the thread and
 *   the CUcontext" (Driver API, "Stream synchronization behavior"): a thread
 *   gets a new, idle one, whatever id the OS gives it; one of an ended thread
 *   finishes its queued work and is never seen again.
 * - Work: each stream a FIFO; one host thread per context runs the queues:
 *   "busy" GPU time (streams overlap), event records, waits for events (a wait
 *   orders the stream after the event's record that was latest when the wait
 *   was enqueued: cuStreamWaitEvent), and host functions, one at a time, in
 *   stream order ("the function will be called after currently enqueued work
 *   and will block work added after it": cuLaunchHostFunc).
 * - The driver lock (CUDA is silent, so the hardest case): every call of a
 *   context takes the context's lock, and the host thread holds it while a
 *   host function runs, so a call from another thread waits until the host
 *   function has returned. A caller that holds the GIL while it waits here
 *   deadlocks with a host function that needs the GIL.
 * - Calls from a host function: "The host function must not make any CUDA API
 *   calls. Attempting to use a CUDA API may result in CUDA_ERROR_NOT_PERMITTED,
 *   but this is not required" (cuLaunchHostFunc): every call returns 800 (and
 *   is counted, so a test can require that none is made).
 * - Sticky errors: a fault (fake_fault) makes every later call of the context
 *   return CUDA_ERROR_ILLEGAL_ADDRESS (700), and host functions queued behind
 *   it never run ("the function will not be called in the event of an error in
 *   the CUDA context": cuLaunchHostFunc).
 * - Capture: cuStreamBeginCapture with its three modes, cuStreamEndCapture,
 *   cuStreamIsCapturing, cuThreadExchangeStreamCaptureMode (Driver API,
 *   cuThreadExchangeStreamCaptureMode): in global mode, "if the local thread
 *   has an ongoing capture sequence that was not initiated with
 *   CU_STREAM_CAPTURE_MODE_RELAXED ..., or if any other thread has a
 *   concurrent capture sequence initiated with CU_STREAM_CAPTURE_MODE_GLOBAL,
 *   this thread is prohibited from potentially unsafe API calls"; thread-local
 *   mode only looks at the thread's own captures; relaxed mode at none.
 *   CUDA lists no "potentially unsafe" calls beyond cudaMalloc, so every call
 *   that queries, waits, destroys, creates or enqueues outside the capture is
 *   one here; only the metadata calls (contexts, devices, IsCapturing, the
 *   mode exchange) are safe. A refused call returns
 *   CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED (900) and invalidates the captures
 *   that made it unsafe ("When an invalid operation is attempted during stream
 *   capture, any associated capture graphs are invalidated": Guide, "CUDA
 *   Graphs", "Invalidation"); cuStreamEndCapture then returns
 *   CUDA_ERROR_STREAM_CAPTURE_INVALIDATED (901). Work launched into a
 *   capturing stream is recorded, not run. Querying the capturing stream
 *   itself is refused the same way ("It is invalid to synchronize or query the
 *   execution status of a stream which is being captured": Guide).
 * - Handles are addresses in this library: readable, and read through on every
 *   call, as a real driver does, so an unreadable handle crashes here too.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef void (*host_fn)(void *);
enum {
  OK = 0, INVALID_VALUE = 1, NOT_INITIALIZED = 3, NO_DEVICE = 100, INVALID_DEVICE = 101,
  INVALID_CONTEXT = 201, INVALID_HANDLE = 400, NOT_FOUND = 500, NOT_READY = 600,
  ILLEGAL_ADDRESS = 700, NOT_PERMITTED = 800, CAPTURE_UNSUPPORTED = 900,
  CAPTURE_INVALIDATED = 901, CAPTURE_WRONG_THREAD = 908,
};
enum { GLOBAL = 0, THREAD_LOCAL = 1, RELAXED = 2 };          /* CUstreamCaptureMode */
enum { CAPTURE_NONE = 0, CAPTURE_ACTIVE = 1, CAPTURE_INVALID = 2 }; /* CUstreamCaptureStatus */
enum { MAX_DEVICES = 8, N = 64, MAX_DEPTH = 8 };
enum { HOST_FUNCTION, BUSY, RECORD, WAIT, FAULT };

struct context;
struct event { struct context *ctx; int used; long recorded, completed; };
struct item {
  int kind, ms;
  long target;
  struct timespec until;
  int started;
  host_fn fn;
  void *data;
  struct event *event;
  struct item *next;
};
struct stream {
  char readable[16]; /* what the driver reads through a handle */
  struct context *ctx;
  int used, destroyed, ended, capture, capture_mode;
  pthread_t capture_thread;
  struct item *head, *tail;
  struct stream *next_in_context;
};
struct context {
  int device, retained, sticky, started;
  pthread_mutex_t lock; /* the driver lock: see the top */
  pthread_cond_t changed;
  pthread_t host_thread;
  struct stream legacy;
  struct stream *streams; /* every stream of the context, per-thread ones too */
};

static int initialised, physical = 2, visible_count, visible[MAX_DEVICES];
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static struct context contexts[MAX_DEVICES];
static struct stream streams[N];
static struct event events[N];

static __thread struct context *current[MAX_DEPTH];
static __thread int depth;
static __thread int mode = GLOBAL;   /* this thread's capture mode */
static __thread int in_host_function;
static __thread struct stream *per_thread[MAX_DEVICES];
static pthread_key_t thread_end;
static pthread_once_t thread_end_once = PTHREAD_ONCE_INIT;

static const char *const names[] = {
    "cuInit", "cuDriverGetVersion", "cuDeviceGetCount", "cuDevicePrimaryCtxRetain",
    "cuCtxSetCurrent", "cuCtxGetCurrent", "cuCtxPushCurrent", "cuCtxPopCurrent",
    "cuCtxGetDevice", "cuStreamGetCtx", "cuStreamQuery", "cuEventQuery", "cuEventRecord",
    "cuStreamWaitEvent", "cuLaunchHostFunc", "cuStreamIsCapturing", "cuStreamBeginCapture",
    "cuStreamEndCapture", "cuThreadExchangeStreamCaptureMode", "cuStreamDestroy",
    "cuEventDestroy", "cuStreamCreateWithPriority", "cuEventCreate",
};
enum { INIT, VERSION, DEVICE_COUNT, RETAIN, SET_CURRENT, GET_CURRENT, PUSH, POP, GET_DEVICE,
       GET_CTX, QUERY, EVENT_QUERY, EVENT_RECORD, WAIT_EVENT, LAUNCH, CAPTURING, BEGIN_CAPTURE,
       END_CAPTURE, EXCHANGE_MODE, STREAM_DESTROY, EVENT_DESTROY, STREAM_CREATE, EVENT_CREATE,
       COUNT };
static int calls[COUNT], from_host_function, refused_in_capture;
#define COUNTED(k) __atomic_fetch_add(&calls[k], 1, __ATOMIC_RELAXED)
#define BUMP(counter) __atomic_fetch_add(&(counter), 1, __ATOMIC_RELAXED)
/* Every call's first step: none is permitted from a host function (see the top). */
#define ENTER(k)                                   \
  do {                                             \
    COUNTED(k);                                    \
    if (in_host_function) {                        \
      BUMP(from_host_function);                    \
      return NOT_PERMITTED;                        \
    }                                              \
  } while (0)

static void now_plus(struct timespec *t, long ms) {
  clock_gettime(CLOCK_REALTIME, t);
  t->tv_sec += ms / 1000;
  t->tv_nsec += (ms % 1000) * 1000000L;
  if (t->tv_nsec >= 1000000000L) {
    t->tv_sec++;
    t->tv_nsec -= 1000000000L;
  }
}

static int before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* -- the host thread of a context: runs every stream's queue ------------------- */

static void pop(struct stream *s) {
  struct item *it = s->head;
  s->head = it->next;
  if (!s->head) s->tail = 0;
  free(it);
}

static void *run_host_thread(void *arg) {
  struct context *c = arg;
  pthread_mutex_lock(&c->lock);
  for (;;) {
    int progressed = 0;
    struct timespec wake;
    now_plus(&wake, 50);
    for (struct stream *s = c->streams; s; s = s->next_in_context) {
      while (s->head && !c->sticky) {
        struct item *it = s->head;
        if (it->kind == BUSY) {
          struct timespec now;
          clock_gettime(CLOCK_REALTIME, &now);
          if (!it->started) {
            it->started = 1;
            now_plus(&it->until, it->ms);
          }
          if (before(&now, &it->until)) {
            if (before(&it->until, &wake)) wake = it->until;
            break;
          }
        } else if (it->kind == WAIT) {
          if (__atomic_load_n(&it->event->completed, __ATOMIC_ACQUIRE) < it->target) {
            struct timespec soon;
            now_plus(&soon, 1); /* an event of another context: look again soon */
            if (before(&soon, &wake)) wake = soon;
            break;
          }
        } else if (it->kind == RECORD) {
          __atomic_store_n(&it->event->completed, it->target, __ATOMIC_RELEASE);
        } else if (it->kind == HOST_FUNCTION) {
          in_host_function = 1; /* the driver lock stays held: see the top */
          it->fn(it->data);
          in_host_function = 0;
        } else if (it->kind == FAULT) {
          c->sticky = ILLEGAL_ADDRESS;
        }
        pop(s);
        progressed = 1;
      }
    }
    if (progressed)
      pthread_cond_broadcast(&c->changed);
    else
      pthread_cond_timedwait(&c->changed, &c->lock, &wake);
  }
  return 0;
}

/* -- handles ------------------------------------------------------------------ */

static void end_of_thread(void *unused) {
  (void)unused;
  for (int d = 0; d < MAX_DEVICES; d++)
    if (per_thread[d]) per_thread[d]->ended = 1; /* its queued work still runs */
}

static void make_thread_end_key(void) { pthread_key_create(&thread_end, end_of_thread); }

static void add_stream(struct context *c, struct stream *s) {
  s->ctx = c;
  s->used = 1;
  s->next_in_context = c->streams;
  c->streams = s;
}

static struct context *current_context(void) { return depth ? current[depth - 1] : 0; }

/* The stream a handle names for the calling thread, or 0 with *status set. */
static struct stream *stream_of(void *handle, CUresult *status) {
  uintptr_t h = (uintptr_t)handle;
  if (h <= 2) {
    struct context *c = current_context();
    if (!c) {
      *status = INVALID_CONTEXT;
      return 0;
    }
    if (h < 2) return &c->legacy;
    struct stream **mine = &per_thread[c->device];
    if (!*mine) {
      pthread_once(&thread_end_once, make_thread_end_key);
      pthread_setspecific(thread_end, (void *)1);
      *mine = calloc(1, sizeof **mine);
      add_stream(c, *mine);
    }
    return *mine;
  }
  (void)*(volatile char *)handle; /* a real driver reads through the handle */
  struct stream *s = handle;
  if ((char *)s >= (char *)streams && (char *)s < (char *)(streams + N)) {
    if (((char *)s - (char *)streams) % sizeof *s == 0 && s->used && !s->destroyed) return s;
  } else {
    for (int d = 0; d < visible_count; d++) /* a per-thread stream's own address */
      for (struct stream *t = contexts[d].streams; t; t = t->next_in_context)
        if (t == s && !t->ended) return s;
  }
  *status = INVALID_HANDLE;
  return 0;
}

static struct event *event_of(void *handle) {
  if ((uintptr_t)handle <= 2) return 0;
  (void)*(volatile char *)handle;
  struct event *e = handle;
  if ((char *)e < (char *)events || (char *)e >= (char *)(events + N)) return 0;
  if (((char *)e - (char *)events) % sizeof *e || !e->used) return 0;
  return e;
}

/* -- capture rules --------------------------------------------------------------- */

/* Whether an unsafe call from this thread is prohibited in context c now (see the
 * top); invalidates the captures that prohibit it. Call with c->lock held. */
static int prohibited(struct context *c) {
  if (mode == RELAXED) return 0;
  int refused = 0;
  pthread_t self = pthread_self();
  for (struct stream *s = c->streams; s; s = s->next_in_context) {
    if (s->capture != CAPTURE_ACTIVE || s->capture_mode == RELAXED) continue;
    int own = pthread_equal(s->capture_thread, self);
    if (own || (mode == GLOBAL && s->capture_mode == GLOBAL)) {
      s->capture = CAPTURE_INVALID;
      refused = 1;
    }
  }
  if (refused) BUMP(refused_in_capture);
  return refused;
}

/* Lock the stream's context and check the call may go on: sticky errors and the
 * capture rules. *unsafe*: the call is one of the "potentially unsafe" ones. */
static CUresult enter_context(struct context *c, int unsafe) {
  pthread_mutex_lock(&c->lock);
  if (c->sticky) return c->sticky;
  if (unsafe && prohibited(c)) return CAPTURE_UNSUPPORTED;
  return OK;
}

static CUresult leave(struct context *c, CUresult status) {
  pthread_mutex_unlock(&c->lock);
  return status;
}

static void start_host_thread(struct context *c) {
  if (!c->started) {
    c->started = 1;
    pthread_create(&c->host_thread, 0, run_host_thread, c);
  }
}

static CUresult enqueue(struct stream *s, struct item it) {
  struct item *copy = malloc(sizeof *copy);
  *copy = it;
  copy->next = 0;
  if (s->tail)
    s->tail->next = copy;
  else
    s->head = copy;
  s->tail = copy;
  start_host_thread(s->ctx);
  pthread_cond_broadcast(&s->ctx->changed);
  return OK;
}

/* -- initialisation, devices, contexts ------------------------------------------- */

static CUresult init(unsigned flags) {
  COUNTED(INIT);
  if (flags) return INVALID_VALUE;
  pthread_mutex_lock(&init_lock);
  if (!initialised) {
    const char *count = getenv("FAKE_CUDA_DEVICES");
    if (count && *count) physical = atoi(count);
    if (physical > MAX_DEVICES) physical = MAX_DEVICES;
    const char *list = getenv("CUDA_VISIBLE_DEVICES"); /* read here, once */
    if (!list) {
      for (int d = 0; d < physical; d++) visible[visible_count++] = d;
    } else {
      /* the listed indices in order, up to the first that does not exist */
      char *copy = strdup(list), *save = 0;
      for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(0, ",", &save)) {
        char *end;
        long d = strtol(tok, &end, 10);
        if (end == tok || *end || d < 0 || d >= physical) break;
        visible[visible_count++] = (int)d;
      }
      free(copy);
    }
    for (int d = 0; d < visible_count; d++) {
      struct context *c = &contexts[d];
      c->device = d;
      pthread_mutex_init(&c->lock, 0);
      pthread_cond_init(&c->changed, 0);
      add_stream(c, &c->legacy);
    }
    for (int i = 0; i < N; i++) {
      if (visible_count) add_stream(&contexts[i % visible_count], &streams[i]);
      streams[i].destroyed = i >= N / 2; /* free for cuStreamCreateWithPriority */
      events[i].used = i < N / 2; /* the upper half: free for cuEventCreate */
      events[i].ctx = visible_count ? &contexts[i % visible_count] : 0;
    }
    initialised = 1;
  }
  pthread_mutex_unlock(&init_lock);
  return visible_count ? OK : NO_DEVICE;
}

static CUresult driver_version(int *version) {
  COUNTED(VERSION);
  *version = 13000;
  return OK;
}

static CUresult device_count(int *count) {
  ENTER(DEVICE_COUNT);
  if (!initialised) return NOT_INITIALIZED;
  *count = visible_count;
  return OK;
}

static CUresult primary_retain(struct context **out, int device) {
  ENTER(RETAIN);
  if (!initialised) return NOT_INITIALIZED;
  if (device < 0 || device >= visible_count) return INVALID_DEVICE;
  __atomic_fetch_add(&contexts[device].retained, 1, __ATOMIC_RELAXED);
  *out = &contexts[device];
  return OK;
}

static int is_context(struct context *c) {
  return c >= contexts && c < contexts + visible_count;
}

static CUresult set_current(struct context *c) {
  ENTER(SET_CURRENT);
  if (!c) { /* NULL: pop the current one */
    if (depth) depth--;
    return OK;
  }
  if (!is_context(c)) return INVALID_CONTEXT;
  if (depth)
    current[depth - 1] = c;
  else
    current[depth++] = c;
  return OK;
}

static CUresult get_current(struct context **out) {
  ENTER(GET_CURRENT);
  *out = current_context();
  return OK;
}

static CUresult ctx_push(struct context *c) {
  ENTER(PUSH);
  if (!is_context(c)) return INVALID_CONTEXT;
  if (depth == MAX_DEPTH) return INVALID_VALUE;
  current[depth++] = c;
  return OK;
}

static CUresult ctx_pop(struct context **out) {
  ENTER(POP);
  if (!depth) return INVALID_CONTEXT;
  struct context *top = current[--depth];
  if (out) *out = top;
  return OK;
}

static CUresult ctx_get_device(int *device) {
  ENTER(GET_DEVICE);
  struct context *c = current_context();
  if (!c) return INVALID_CONTEXT;
  *device = c->device;
  return OK;
}

static CUresult stream_get_ctx(void *handle, struct context **out) {
  ENTER(GET_CTX);
  CUresult status = OK;
  struct stream *s = stream_of(handle, &status);
  if (!s) return status;
  *out = s->ctx;
  return OK;
}

static CUresult exchange_mode(int *new_and_old) {
  ENTER(EXCHANGE_MODE);
  if (*new_and_old < GLOBAL || *new_and_old > RELAXED) return INVALID_VALUE;
  int old = mode;
  mode = *new_and_old;
  *new_and_old = old;
  return OK;
}

/* -- streams and events ----------------------------------------------------------- */

static CUresult stream_query(void *handle) {
  ENTER(QUERY);
  CUresult status = OK;
  struct stream *s = stream_of(handle, &status);
  if (!s) return status;
  status = enter_context(s->ctx, 1);
  if (status) return leave(s->ctx, status);
  if (s->capture) { /* querying a capturing stream: invalid, and it invalidates */
    s->capture = CAPTURE_INVALID;
    return leave(s->ctx, CAPTURE_UNSUPPORTED);
  }
  return leave(s->ctx, s->head ? NOT_READY : OK);
}

static CUresult event_query(void *handle) {
  ENTER(EVENT_QUERY);
  struct event *e = event_of(handle);
  if (!e) return INVALID_HANDLE;
  CUresult status = enter_context(e->ctx, 1);
  if (status) return leave(e->ctx, status);
  return leave(e->ctx, e->completed < e->recorded ? NOT_READY : OK);
}

/* Work for stream s: recorded into its capture, or queued. c->lock is held. */
static CUresult submit(struct stream *s, struct item it) {
  if (s->capture == CAPTURE_INVALID) return CAPTURE_INVALIDATED;
  if (s->capture == CAPTURE_ACTIVE) return OK; /* a graph node: runs on replay */
  if (prohibited(s->ctx)) return CAPTURE_UNSUPPORTED;
  return enqueue(s, it);
}

static CUresult event_record(void *event_handle, void *stream_handle) {
  ENTER(EVENT_RECORD);
  struct event *e = event_of(event_handle);
  CUresult status = OK;
  struct stream *s = stream_of(stream_handle, &status);
  if (!e) return INVALID_HANDLE;
  if (!s) return status;
  if (e->ctx != s->ctx) return INVALID_HANDLE; /* event and stream of one context */
  status = enter_context(s->ctx, 0);
  if (status) return leave(s->ctx, status);
  if (s->capture == CAPTURE_NONE) {
    status = submit(s, (struct item){.kind = RECORD, .event = e, .target = e->recorded + 1});
    if (!status) e->recorded++;
  } else {
    status = submit(s, (struct item){0});
  }
  return leave(s->ctx, status);
}

static CUresult stream_wait_event(void *stream_handle, void *event_handle, unsigned flags) {
  ENTER(WAIT_EVENT);
  struct event *e = event_of(event_handle);
  CUresult status = OK;
  struct stream *s = stream_of(stream_handle, &status);
  if (!e || flags) return INVALID_HANDLE;
  if (!s) return status;
  status = enter_context(s->ctx, 0);
  if (status) return leave(s->ctx, status);
  long target = __atomic_load_n(&e->recorded, __ATOMIC_ACQUIRE); /* the latest record now */
  return leave(s->ctx, submit(s, (struct item){.kind = WAIT, .event = e, .target = target}));
}

static CUresult launch_host_func(void *handle, host_fn fn, void *data) {
  ENTER(LAUNCH);
  CUresult status = OK;
  struct stream *s = stream_of(handle, &status);
  if (!s) return status;
  if (!fn) return INVALID_VALUE;
  status = enter_context(s->ctx, 0);
  if (status) return leave(s->ctx, status);
  return leave(s->ctx, submit(s, (struct item){.kind = HOST_FUNCTION, .fn = fn, .data = data}));
}

static CUresult stream_is_capturing(void *handle, int *capture) {
  ENTER(CAPTURING);
  CUresult status = OK;
  struct stream *s = stream_of(handle, &status);
  if (!s) return status;
  pthread_mutex_lock(&s->ctx->lock);
  *capture = s->capture;
  return leave(s->ctx, s->ctx->sticky);
}

static CUresult begin_capture(void *handle, int capture_mode) {
  ENTER(BEGIN_CAPTURE);
  CUresult status = OK;
  struct stream *s = stream_of(handle, &status);
  if (!s) return status;
  if ((uintptr_t)handle < 2 || capture_mode < GLOBAL || capture_mode > RELAXED)
    return INVALID_VALUE; /* the legacy stream cannot be captured */
  status = enter_context(s->ctx, 0);
  if (status) return leave(s->ctx, status);
  if (s->capture) return leave(s->ctx, INVALID_VALUE);
  s->capture = CAPTURE_ACTIVE;
  s->capture_mode = capture_mode;
  s->capture_thread = pthread_self();
  return leave(s->ctx, OK);
}

static CUresult end_capture(void *handle, void **graph) {
  ENTER(END_CAPTURE);
  CUresult status = OK;
  struct stream *s = stream_of(handle, &status);
  if (!s) return status;
  pthread_mutex_lock(&s->ctx->lock);
  if (!s->capture) return leave(s->ctx, INVALID_VALUE);
  /* "If mode is not CU_STREAM_CAPTURE_MODE_RELAXED, cuStreamEndCapture must be
   * called on this stream from the same thread" (cuStreamBeginCapture) */
  if (s->capture_mode != RELAXED && !pthread_equal(s->capture_thread, pthread_self()))
    return leave(s->ctx, CAPTURE_WRONG_THREAD);
  int valid = s->capture == CAPTURE_ACTIVE;
  s->capture = CAPTURE_NONE;
  *graph = valid ? (void *)s : 0;
  return leave(s->ctx, valid ? OK : CAPTURE_INVALIDATED);
}

static CUresult stream_destroy(void *handle) {
  ENTER(STREAM_DESTROY);
  if ((uintptr_t)handle <= 2) return INVALID_HANDLE;
  CUresult status = OK;
  struct stream *s = stream_of(handle, &status);
  if (!s) return status;
  status = enter_context(s->ctx, 1);
  if (!status) s->destroyed = 1; /* "released ... once the device has completed all work" */
  return leave(s->ctx, status);
}

static CUresult stream_create(void **out, unsigned flags, int priority) {
  ENTER(STREAM_CREATE);
  (void)flags;
  (void)priority;
  struct context *c = current_context();
  if (!c) return INVALID_CONTEXT;
  CUresult status = enter_context(c, 1);
  if (status) return leave(c, status);
  for (int i = N / 2; i < N; i++) /* the upper half: streams the driver makes */
    if (streams[i].ctx == c && streams[i].destroyed && !streams[i].head) {
      streams[i].destroyed = streams[i].capture = 0;
      *out = &streams[i];
      return leave(c, OK);
    }
  return leave(c, INVALID_VALUE); /* out of streams */
}

static CUresult event_destroy(void *handle) {
  ENTER(EVENT_DESTROY);
  struct event *e = event_of(handle);
  if (!e) return INVALID_HANDLE;
  CUresult status = enter_context(e->ctx, 1);
  /* "resources ... released asynchronously at completion" (cuEventDestroy): the
   * slot serves again only once its records are done */
  if (!status) e->used = 0;
  return leave(e->ctx, status);
}

static CUresult event_create(void **out, unsigned flags) {
  ENTER(EVENT_CREATE);
  (void)flags;
  struct context *c = current_context();
  if (!c) return INVALID_CONTEXT;
  CUresult status = enter_context(c, 1);
  if (status) return leave(c, status);
  for (int i = N / 2; i < N; i++) /* the upper half: events the driver makes */
    if (events[i].ctx == c && !events[i].used && events[i].completed == events[i].recorded) {
      events[i].used = 1;
      *out = &events[i];
      return leave(c, OK);
    }
  return leave(c, INVALID_VALUE); /* out of events */
}

static void *const functions[COUNT] = {
    (void *)init, (void *)driver_version, (void *)device_count, (void *)primary_retain,
    (void *)set_current, (void *)get_current, (void *)ctx_push, (void *)ctx_pop,
    (void *)ctx_get_device, (void *)stream_get_ctx, (void *)stream_query,
    (void *)event_query, (void *)event_record, (void *)stream_wait_event,
    (void *)launch_host_func, (void *)stream_is_capturing, (void *)begin_capture,
    (void *)end_capture, (void *)exchange_mode, (void *)stream_destroy, (void *)event_destroy,
    (void *)stream_create, (void *)event_create,
};

/* The per-thread default stream variants ("_ptsz"), which cuGetProcAddress gives
 * for CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM: there, handle 0 means the
 * calling thread's per-thread stream, as CU_STREAM_PER_THREAD does. */
#define PTSZ(h) ((uintptr_t)(h) == 0 ? (void *)2 : (h))
static CUresult stream_query_ptsz(void *s) { return stream_query(PTSZ(s)); }
static CUresult event_record_ptsz(void *e, void *s) { return event_record(e, PTSZ(s)); }
static CUresult stream_wait_event_ptsz(void *s, void *e, unsigned f) {
  return stream_wait_event(PTSZ(s), e, f);
}
static CUresult launch_host_func_ptsz(void *s, host_fn fn, void *data) {
  return launch_host_func(PTSZ(s), fn, data);
}
static CUresult stream_is_capturing_ptsz(void *s, int *c) { return stream_is_capturing(PTSZ(s), c); }
enum { PER_THREAD_DEFAULT_STREAM = 2 }; /* CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM */

CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, uint64_t flags,
                             int *status) {
  (void)version;
  *pfn = 0;
  for (int k = 0; k < COUNT; k++)
    if (!strcmp(symbol, names[k])) *pfn = functions[k];
  if (flags & PER_THREAD_DEFAULT_STREAM) {
    if (*pfn == (void *)stream_query) *pfn = (void *)stream_query_ptsz;
    if (*pfn == (void *)event_record) *pfn = (void *)event_record_ptsz;
    if (*pfn == (void *)stream_wait_event) *pfn = (void *)stream_wait_event_ptsz;
    if (*pfn == (void *)launch_host_func) *pfn = (void *)launch_host_func_ptsz;
    if (*pfn == (void *)stream_is_capturing) *pfn = (void *)stream_is_capturing_ptsz;
  }
  if (!strcmp(symbol, "cuGetProcAddress")) *pfn = (void *)cuGetProcAddress_v2;
  if (status) *status = *pfn ? 0 : 1; /* CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND */
  return *pfn ? OK : NOT_FOUND;
}
CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, uint64_t flags) {
  return cuGetProcAddress_v2(symbol, pfn, version, flags, 0);
}
CUresult cuInit(unsigned flags) { return init(flags); }
CUresult cuDriverGetVersion(int *version) { return driver_version(version); }
CUresult cuDeviceGetCount(int *count) { return device_count(count); }

/* -- for the tests: handles, work, faults, captures, and what was called ----------- */

void *fake_stream(int i) { return i >= 0 && i < N / 2 ? &streams[i] : 0; }
void *fake_event(int i) { return i >= 0 && i < N / 2 ? &events[i] : 0; }

/* Keep the stream busy for ms milliseconds (GPU work, no host function). */
int fake_busy(void *handle, int ms) {
  CUresult status = OK;
  struct stream *s = stream_of(handle, &status);
  if (!s) return status;
  status = enter_context(s->ctx, 0);
  if (status) return leave(s->ctx, status);
  return leave(s->ctx, submit(s, (struct item){.kind = BUSY, .ms = ms}));
}

/* A kernel fault when the stream gets there: the context's error becomes sticky. */
int fake_fault(void *handle) {
  CUresult status = OK;
  struct stream *s = stream_of(handle, &status);
  if (!s) return status;
  pthread_mutex_lock(&s->ctx->lock);
  return leave(s->ctx, enqueue(s, (struct item){.kind = FAULT}));
}

int fake_calls(const char *name) {
  if (!strcmp(name, "from host function")) return __atomic_load_n(&from_host_function, 0);
  if (!strcmp(name, "refused in capture")) return __atomic_load_n(&refused_in_capture, 0);
  for (int k = 0; k < COUNT; k++)
    if (!strcmp(name, names[k])) return __atomic_load_n(&calls[k], __ATOMIC_RELAXED);
  return -1;
}
int fake_context_depth(void) { return depth; }
