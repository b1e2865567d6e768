/* backoff.c - exponential backoff with jitter. */
#include "backoff.h"

#include <unistd.h>

void backoff_init(Backoff *b, TimeUs initial, TimeUs max)
{
    b->initial = initial > 0 ? initial : 1;
    b->max = max > b->initial ? max : b->initial;
    b->current = b->initial;
    b->attempts = 0;
    b->rng = (uint64_t)clock_wall_us() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15u;
}

static uint64_t next_random(Backoff *b)
{
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    return b->rng;
}

TimeUs backoff_next(Backoff *b)
{
    TimeUs base = b->current;
    TimeUs spread = base / 2; /* jitter in [-25 %, +25 %] */
    TimeUs delay = base - spread / 2;

    if (spread > 0)
        delay += (TimeUs)(next_random(b) % (uint64_t)spread);
    b->current = base >= b->max / 2 ? b->max : base * 2;
    b->attempts++;
    return delay;
}

void backoff_reset(Backoff *b)
{
    b->current = b->initial;
    b->attempts = 0;
}
