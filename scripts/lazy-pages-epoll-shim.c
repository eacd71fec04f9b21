/*
 * Preloaded into CRIU's lazy-pages daemon only (providers/runtime/lazy-restore.ts).
 *
 * Once the restore has finished, CRIU 4.2's daemon (criu/uffd.c, handle_requests) polls its
 * events with a zero timeout in a loop and sends the next background request only when the
 * previous one has been answered: while a request crosses the link it spins, one whole core per
 * daemon. On a 2-core host that starved everything else: the worker forwarding the pages (the
 * window ran at 230-440 Mbit/s on a 1 Gbit/s link), and in a 16-container group the restores of
 * the members not yet restored (a 7-11 s group blackout, most of it waiting for CPU).
 *
 * Here a zero-timeout epoll_wait that follows one which found nothing waits up to 1 ms instead:
 * any event (an answer from the page server, a page fault, the restore's end) still wakes it at
 * once, and the first empty poll still returns at once, so the daemon's next request is never
 * delayed; only the empty repeats become sleeps. Everything else goes to glibc unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <sys/epoll.h>

typedef int (*epoll_wait_fn)(int, struct epoll_event *, int, int);

static __thread int empty_polls;

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout) {
  static epoll_wait_fn real;
  if (!real) real = (epoll_wait_fn)dlsym(RTLD_NEXT, "epoll_wait");
  int wait = timeout == 0 && empty_polls > 0 ? 1 : timeout;
  int ready = real(epfd, events, maxevents, wait);
  if (timeout == 0) empty_polls = ready == 0 ? empty_polls + 1 : 0;
  return ready;
}
