/* A minimal stand-in libcuda.so.1 for the plugin's per-worker GPU test
 * (tests/test_plugin.py compiles it). Like CUDA, cuInit reads CUDA_VISIBLE_DEVICES
 * once; cuDeviceGetCount answers how many of the FAKE_CUDA_DEVICES (default 2)
 * physical devices that snapshot leaves visible, and appends "pid visible count"
 * to the file named by VISIBLE_DEVICES_LOG, if set. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char visible[256] = "-"; /* "-": the variable was unset at cuInit */
static int count = -1;

int cuInit(unsigned flags) {
  (void)flags;
  if (count >= 0) return 0;
  const char *physical = getenv("FAKE_CUDA_DEVICES"), *list = getenv("CUDA_VISIBLE_DEVICES");
  int total = physical ? atoi(physical) : 2;
  count = total;
  if (list) {
    snprintf(visible, sizeof visible, "%s", list);
    char copy[256], *save = NULL;
    snprintf(copy, sizeof copy, "%s", list);
    count = 0; /* CUDA stops at the first entry that names no device */
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
      char *end;
      long index = strtol(item, &end, 10);
      if (end == item || index < 0 || index >= total) break;
      count++;
    }
  }
  return 0;
}

int cuDeviceGetCount(int *out) {
  if (count < 0) return 3; /* CUDA_ERROR_NOT_INITIALIZED */
  *out = count;
  const char *log = getenv("VISIBLE_DEVICES_LOG");
  FILE *file = log ? fopen(log, "a") : NULL;
  if (file) {
    fprintf(file, "%d %s %d\n", (int)getpid(), visible[0] ? visible : "''", count);
    fclose(file);
  }
  return 0;
}
