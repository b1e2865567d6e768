/*
 * loop.h - the event loop (one thread, epoll).
 *
 * Components register file descriptors with a callback; the loop waits
 * until one is ready or the earliest deadline passes, dispatches, then runs
 * the before-sleep hooks (flush batches, send feedback) and computes the
 * next timeout from every component's next deadline. Nothing in a callback
 * may block.
 */
#ifndef PGFAN_LOOP_H
#define PGFAN_LOOP_H

#include "clock.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct Loop Loop;

/* Event bits for loop_watch(): readable, writable. */
#define LOOP_READ 1u
#define LOOP_WRITE 2u
/* Reported only: error or hang-up on the descriptor. */
#define LOOP_ERROR 4u

/* Called with the ready events (LOOP_* bits). */
typedef void (*LoopFdCallback)(void *arg, int fd, unsigned events);

/*
 * Called once per loop turn after dispatching; returns the monotonic time by
 * which it wants to run again (TIME_NEVER for no deadline).
 */
typedef TimeUs (*LoopHook)(void *arg, TimeUs now);

Loop *loop_new(void);
void loop_free(Loop *loop);

/*
 * Starts watching fd for events (LOOP_READ/LOOP_WRITE), or changes the
 * events and callback of an fd already watched. events == 0 keeps the fd
 * registered but asleep. Returns false (errno set) on failure.
 */
bool loop_watch(Loop *loop, int fd, unsigned events, LoopFdCallback cb, void *arg);

/* Stops watching fd (no-op when it is not watched). Call before close(fd). */
void loop_unwatch(Loop *loop, int fd);

/* Adds a before-sleep hook; hooks run in the order added. */
void loop_add_hook(Loop *loop, LoopHook hook, void *arg);

/*
 * Waits for events at most until `deadline` (monotonic) or the hooks'
 * earliest deadline, dispatches them, runs the hooks. Returns false when
 * epoll_wait fails other than by EINTR.
 */
bool loop_run_once(Loop *loop, TimeUs deadline);

#endif
