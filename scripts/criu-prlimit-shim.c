/*
 * Preloaded into CRIU on hosts whose capability bounding set lacks CAP_SYS_RESOURCE (these
 * machines: PLATFORM.md). There, CRIU's read of another process's resource limits,
 * prlimit64(pid, resource, NULL, &old), fails with EPERM whenever that process's uid/gid differ
 * from CRIU's, and the dump of every non-root process (PostgreSQL, nginx's workers) aborts with
 * "Can't get rlimit". The same limits are world-readable in /proc/PID/limits: on exactly that
 * EPERM (a read, of another process) this answers from there. Everything else goes to glibc.
 * Built and installed by scripts/setup.sh only where the capability is missing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef int (*prlimit64_fn)(pid_t, enum __rlimit_resource, const struct rlimit64 *, struct rlimit64 *);

/* One value of /proc/PID/limits: a number or "unlimited". */
static int parse_limit(const char *text, rlim64_t *out) {
  if (strncmp(text, "unlimited", 9) == 0) {
    *out = RLIM64_INFINITY;
    return 0;
  }
  char *end;
  unsigned long long value = strtoull(text, &end, 10);
  if (end == text) return -1;
  *out = value;
  return 0;
}

/* Lines of /proc/PID/limits follow the RLIMIT_* order, after one header line; columns start at 26 and 47. */
static int limits_from_proc(pid_t pid, int resource, struct rlimit64 *old) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  char line[256];
  int index = -1, found = -1;
  while (fgets(line, sizeof line, f)) {
    if (index++ != resource) continue;
    if (strlen(line) > 47 && parse_limit(line + 26, &old->rlim_cur) == 0 && parse_limit(line + 47, &old->rlim_max) == 0) found = 0;
    break;
  }
  fclose(f);
  return found;
}

/* The read CRIU cannot do: another process's limits, refused with EPERM. Answered from /proc. */
static int answer_from_proc(pid_t pid, int resource, const struct rlimit64 *new_limit, struct rlimit64 *old_limit) {
  return errno == EPERM && new_limit == NULL && old_limit != NULL && pid != 0 && pid != getpid() && limits_from_proc(pid, resource, old_limit) == 0;
}

int prlimit64(pid_t pid, enum __rlimit_resource resource, const struct rlimit64 *new_limit, struct rlimit64 *old_limit) {
  static prlimit64_fn real;
  if (!real) real = (prlimit64_fn)dlsym(RTLD_NEXT, "prlimit64");
  int ret = real(pid, resource, new_limit, old_limit);
  if (ret == -1 && answer_from_proc(pid, resource, new_limit, old_limit)) return 0;
  return ret;
}

/* CRIU's dump reads the limits with syscall(__NR_prlimit64, ...), not through glibc's wrapper. */
typedef long (*syscall_fn)(long, ...);

long syscall(long number, ...) {
  static syscall_fn real;
  if (!real) real = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
  va_list ap;
  va_start(ap, number);
  long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long), a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
  va_end(ap);
  long ret = real(number, a1, a2, a3, a4, a5, a6);
  if (number == SYS_prlimit64 && ret == -1 && answer_from_proc((pid_t)a1, (int)a2, (const struct rlimit64 *)a3, (struct rlimit64 *)a4)) return 0;
  return ret;
}
