/* A stand-in libcuda.so.1 for a CPU test of extstream's driver seam
 * (tests/test_driver_seam.py compiles it into a temporary folder).
 *
 * CI has no driver, so neither cuda.bindings' driver calls nor extstream's
 * ctypes entry points ever run there. This library gives them the driver
 * functions extstream calls, with CUDA's C signatures, over a small model:
 * one host thread runs all queued work in launch order (host functions, event
 * records, "busy" sleeps), as CUDA's host-function thread runs host functions.
 * A stream's context names its device: stream i is on device i % 2. Like a real
 * driver it reads through each handle, so an unreadable one crashes. Every other
 * driver function is missing (cuGetProcAddress says so), so the CUDA runtime
 * reports an old driver and extstream's runtime path fails cleanly.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef void (*host_fn)(void *);
enum { OK = 0, INVALID_HANDLE = 400, NOT_FOUND = 500, NOT_READY = 600, CONTEXT = 201 };
enum { N = 64, QUEUE = 1 << 16, MAX_DEPTH = 8 };
enum { HOST_FUNCTION, BUSY, RECORD };

/* Handles are addresses inside these arrays: readable, as a real handle is. */
static char streams[N][64], events[N][64];
static int pending_on_stream[N], pending_records[N];

struct item { int kind, stream, event, ms; host_fn fn; void *data; };
static struct item queue[QUEUE];
static unsigned head, tail;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER, room = PTHREAD_COND_INITIALIZER;
static pthread_t host_thread;
static int started;
static __thread void *contexts[MAX_DEPTH];
static __thread int depth;

static const char *const names[] = {
    "cuInit", "cuDriverGetVersion", "cuStreamQuery", "cuEventQuery", "cuEventRecord",
    "cuStreamWaitEvent", "cuLaunchHostFunc", "cuStreamIsCapturing", "cuStreamGetCtx",
    "cuCtxPushCurrent", "cuCtxPopCurrent", "cuCtxGetDevice",
};
enum { INIT, VERSION, QUERY, EVENT_QUERY, EVENT_RECORD, WAIT_EVENT, LAUNCH, CAPTURING,
       GET_CTX, PUSH, POP, GET_DEVICE, COUNT };
static int calls[COUNT];
#define COUNTED(k) __atomic_fetch_add(&calls[k], 1, __ATOMIC_RELAXED)

/* As a real driver does, read through every handle but the special ones (0, 1, 2):
 * an unreadable one crashes the process here too. */
static int index_in(char (*table)[64], void *handle) {
  if ((uintptr_t)handle <= 2) return -1;
  (void)*(volatile char *)handle;
  intptr_t offset = (char *)handle - &table[0][0];
  return offset >= 0 && offset < N * 64 && offset % 64 == 0 ? (int)(offset / 64) : -1;
}

static void *run_host_thread(void *unused) {
  (void)unused;
  for (;;) {
    pthread_mutex_lock(&lock);
    while (head == tail) pthread_cond_wait(&work, &lock);
    struct item it = queue[head % QUEUE];
    pthread_mutex_unlock(&lock);
    if (it.kind == HOST_FUNCTION) it.fn(it.data);
    if (it.kind == BUSY) {
      struct timespec t = {it.ms / 1000, (it.ms % 1000) * 1000000L};
      nanosleep(&t, 0);
    }
    pthread_mutex_lock(&lock);
    head++;
    pending_on_stream[it.stream]--;
    if (it.kind == RECORD) pending_records[it.event]--;
    pthread_cond_signal(&room);
    pthread_mutex_unlock(&lock);
  }
  return 0;
}

static CUresult submit(struct item it) {
  pthread_mutex_lock(&lock);
  if (!started) {
    pthread_create(&host_thread, 0, run_host_thread, 0);
    started = 1;
  }
  while (tail - head == QUEUE) pthread_cond_wait(&room, &lock); /* a full queue waits */
  queue[tail++ % QUEUE] = it;
  pending_on_stream[it.stream]++;
  if (it.kind == RECORD) pending_records[it.event]++;
  pthread_cond_signal(&work);
  pthread_mutex_unlock(&lock);
  return OK;
}

static int pending(int *counts, int i) {
  pthread_mutex_lock(&lock);
  int n = counts[i];
  pthread_mutex_unlock(&lock);
  return n;
}

static CUresult init(unsigned flags) { COUNTED(INIT); return flags ? 1 : OK; }
static CUresult driver_version(int *version) { COUNTED(VERSION); *version = 13000; return OK; }
static CUresult stream_query(void *s) {
  COUNTED(QUERY);
  int i = index_in(streams, s);
  return i < 0 ? INVALID_HANDLE : pending(pending_on_stream, i) ? NOT_READY : OK;
}
static CUresult event_query(void *e) {
  COUNTED(EVENT_QUERY);
  int i = index_in(events, e);
  return i < 0 ? INVALID_HANDLE : pending(pending_records, i) ? NOT_READY : OK;
}
static CUresult event_record(void *e, void *s) {
  COUNTED(EVENT_RECORD);
  int event = index_in(events, e), stream = index_in(streams, s);
  if (event < 0 || stream < 0) return INVALID_HANDLE;
  return submit((struct item){RECORD, stream, event, 0, 0, 0});
}
static CUresult stream_wait_event(void *s, void *e, unsigned flags) {
  COUNTED(WAIT_EVENT);
  return index_in(streams, s) < 0 || index_in(events, e) < 0 || flags ? INVALID_HANDLE : OK;
}
static CUresult launch_host_func(void *s, host_fn fn, void *data) {
  COUNTED(LAUNCH);
  int i = index_in(streams, s);
  return i < 0 || !fn ? INVALID_HANDLE : submit((struct item){HOST_FUNCTION, i, 0, 0, fn, data});
}
static CUresult stream_is_capturing(void *s, int *status) {
  COUNTED(CAPTURING);
  if (index_in(streams, s) < 0) return INVALID_HANDLE;
  *status = 0; /* CU_STREAM_CAPTURE_STATUS_NONE */
  return OK;
}
static CUresult stream_get_ctx(void *s, void **context) {
  COUNTED(GET_CTX);
  int i = index_in(streams, s);
  if (i < 0) return INVALID_HANDLE;
  *context = (void *)(intptr_t)(0x1000 + i % 2);
  return OK;
}
static CUresult ctx_push(void *context) {
  COUNTED(PUSH);
  if (depth == MAX_DEPTH) return CONTEXT;
  contexts[depth++] = context;
  return OK;
}
static CUresult ctx_pop(void **context) {
  COUNTED(POP);
  if (!depth) return CONTEXT;
  void *top = contexts[--depth];
  if (context) *context = top;
  return OK;
}
static CUresult ctx_get_device(int *device) {
  COUNTED(GET_DEVICE);
  if (!depth) return CONTEXT;
  *device = (int)((intptr_t)contexts[depth - 1] - 0x1000);
  return OK;
}

static void *const functions[COUNT] = {
    (void *)init, (void *)driver_version, (void *)stream_query, (void *)event_query,
    (void *)event_record, (void *)stream_wait_event, (void *)launch_host_func,
    (void *)stream_is_capturing, (void *)stream_get_ctx, (void *)ctx_push, (void *)ctx_pop,
    (void *)ctx_get_device,
};

CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, uint64_t flags,
                             int *status) {
  (void)version;
  (void)flags;
  *pfn = 0;
  for (int k = 0; k < COUNT; k++)
    if (!strcmp(symbol, names[k])) *pfn = functions[k];
  if (!strcmp(symbol, "cuGetProcAddress")) *pfn = (void *)cuGetProcAddress_v2;
  if (status) *status = *pfn ? 0 : 1; /* CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND */
  return *pfn ? OK : NOT_FOUND;
}
CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, uint64_t flags) {
  return cuGetProcAddress_v2(symbol, pfn, version, flags, 0);
}
CUresult cuInit(unsigned flags) { return init(flags); }
CUresult cuDriverGetVersion(int *version) { return driver_version(version); }

/* For the test: handles, work that keeps a stream busy, and what was called. */
void *fake_stream(int i) { return i >= 0 && i < N ? streams[i] : 0; }
void *fake_event(int i) { return i >= 0 && i < N ? events[i] : 0; }
int fake_busy(void *s, int ms) {
  int i = index_in(streams, s);
  return i < 0 ? INVALID_HANDLE : submit((struct item){BUSY, i, 0, ms, 0, 0});
}
int fake_calls(const char *name) {
  for (int k = 0; k < COUNT; k++)
    if (!strcmp(name, names[k])) return __atomic_load_n(&calls[k], __ATOMIC_RELAXED);
  return -1;
}
int fake_context_depth(void) { return depth; }
