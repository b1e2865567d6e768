/* sim_rng.c - PCG32 (XSH-RR) seeded with SplitMix64. */
#include "sim_rng.h"

#include <math.h>

#define PCG_MULT UINT64_C(6364136223846793005)

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));

    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

void rng_seed(Rng *r, uint64_t seed)
{
    uint64_t x = seed;

    r->state = splitmix64(&x);
    r->inc = splitmix64(&x) | 1u;
    (void)rng_u32(r);
}

void rng_derive(Rng *r, uint64_t seed, uint64_t key)
{
    uint64_t x = seed ^ UINT64_C(0x5851F42D4C957F2D);

    x = splitmix64(&x) ^ key;
    rng_seed(r, splitmix64(&x));
}

uint32_t rng_u32(Rng *r)
{
    uint64_t old = r->state;
    uint32_t xorshifted, rot;

    r->state = old * PCG_MULT + r->inc;
    xorshifted = (uint32_t)(((old >> 18) ^ old) >> 27);
    rot = (uint32_t)(old >> 59);
    return (xorshifted >> rot) | (xorshifted << ((32 - rot) & 31));
}

uint64_t rng_u64(Rng *r)
{
    uint64_t hi = rng_u32(r);

    return (hi << 32) | rng_u32(r);
}

double rng_double(Rng *r)
{
    return (double)(rng_u64(r) >> 11) * 0x1.0p-53;
}

uint64_t rng_below(Rng *r, uint64_t n)
{
    /* Reject the top partial bucket so every value is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;

    do {
        v = rng_u64(r);
    } while (v >= limit);
    return v % n;
}

int64_t rng_range(Rng *r, int64_t lo, int64_t hi)
{
    return lo + (int64_t)rng_below(r, (uint64_t)(hi - lo) + 1);
}

double rng_exp(Rng *r, double mean)
{
    return -mean * log1p(-rng_double(r));
}

int rng_chance(Rng *r, double p)
{
    return rng_double(r) < p;
}

size_t rng_pick_cdf(Rng *r, const double *cdf, size_t n)
{
    double u = rng_double(r) * cdf[n - 1];
    size_t lo = 0, hi = n - 1;

    /* The first index whose cumulative weight exceeds u. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}
