/*
 * backoff.h - exponential backoff with jitter.
 *
 * Delays start at `initial`, double per failure up to `max`, and are spread
 * by +-25 % jitter so that many clients do not retry in lock-step.
 */
#ifndef PGFAN_BACKOFF_H
#define PGFAN_BACKOFF_H

#include "clock.h"

typedef struct Backoff {
    TimeUs initial;
    TimeUs max;
    TimeUs current; /* next base delay */
    unsigned attempts;
    uint64_t rng; /* xorshift state for the jitter */
} Backoff;

void backoff_init(Backoff *b, TimeUs initial, TimeUs max);

/* Delay before the next attempt; doubles the base for the one after. */
TimeUs backoff_next(Backoff *b);

/* Call after a success: the next failure starts at `initial` again. */
void backoff_reset(Backoff *b);

#endif
