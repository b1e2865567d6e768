/*
 * sim_rng.h - the shop simulator's random numbers.
 *
 * A PCG32 generator (O'Neill, pcg-random.org: 64-bit LCG state, XSH-RR
 * output) seeded through SplitMix64, so the same seed gives the same rows on
 * every machine and libc (rand() and random() do not). Streams are cheap to
 * derive: rng_derive() gives an independent generator for (seed, key), which
 * lets the history generator regenerate one order's items from its id
 * instead of keeping them in memory.
 */
#ifndef PGFAN_SIM_RNG_H
#define PGFAN_SIM_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct Rng {
    uint64_t state;
    uint64_t inc; /* odd */
} Rng;

/* A generator for seed. */
void rng_seed(Rng *r, uint64_t seed);

/* An independent generator for (seed, key): same inputs, same numbers. */
void rng_derive(Rng *r, uint64_t seed, uint64_t key);

uint32_t rng_u32(Rng *r);
uint64_t rng_u64(Rng *r);

/* Uniform in [0, 1) with 53 random bits. */
double rng_double(Rng *r);

/* Uniform integer in [0, n); n > 0 (unbiased: rejection sampling). */
uint64_t rng_below(Rng *r, uint64_t n);

/* Uniform integer in [lo, hi] (lo <= hi). */
int64_t rng_range(Rng *r, int64_t lo, int64_t hi);

/* Exponentially distributed with the given mean. */
double rng_exp(Rng *r, double mean);

/* True with probability p. */
int rng_chance(Rng *r, double p);

/*
 * Index i in [0, n) drawn with probability (cdf[i] - cdf[i-1]) / cdf[n-1]:
 * cdf holds non-decreasing cumulative weights, cdf[n-1] > 0.
 */
size_t rng_pick_cdf(Rng *r, const double *cdf, size_t n);

#endif
