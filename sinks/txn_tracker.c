/*
 * txn_tracker.c - the per-transaction acknowledgement FIFO (txn_tracker.h).
 *
 * A ring indexed by sequence numbers rather than pointers: acknowledgements
 * carry a number, and the ring may grow (and move) while records are out.
 */
#include "txn_tracker.h"

#include "../common/mem.h"

#include <stdlib.h>
#include <string.h>

void txn_tracker_init(TxnTracker *t)
{
    memset(t, 0, sizeof *t);
}

void txn_tracker_free(TxnTracker *t)
{
    free(t->ring);
    memset(t, 0, sizeof *t);
}

static TxnEntry *entry(TxnTracker *t, uint64_t seq)
{
    return &t->ring[(t->head + (size_t)(seq - t->head_seq)) % t->cap];
}

static void push(TxnTracker *t)
{
    if (t->len == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        TxnEntry *n = xcalloc(cap, sizeof *n);

        for (size_t i = 0; i < t->len; i++)
            n[i] = t->ring[(t->head + i) % t->cap];
        free(t->ring);
        t->ring = n;
        t->cap = cap;
        t->head = 0;
    }
    t->ring[(t->head + t->len) % t->cap] =
        (TxnEntry){.end_lsn = LSN_INVALID, .outstanding = 0, .committed = false};
    t->len++;
    t->open = true;
}

static uint64_t newest(const TxnTracker *t)
{
    return t->head_seq + t->len - 1;
}

void txn_tracker_begin(TxnTracker *t)
{
    if (t->open)
        entry(t, newest(t))->committed = true; /* abandoned: end_lsn stays invalid */
    push(t);
}

uint64_t txn_tracker_current(TxnTracker *t)
{
    if (!t->open)
        push(t);
    return newest(t);
}

void txn_tracker_sent(TxnTracker *t, uint64_t seq)
{
    entry(t, seq)->outstanding++;
}

void txn_tracker_acked(TxnTracker *t, uint64_t seq)
{
    txn_tracker_acked_n(t, seq, 1);
}

void txn_tracker_acked_n(TxnTracker *t, uint64_t seq, uint64_t n)
{
    entry(t, seq)->outstanding -= n;
}

void txn_tracker_commit(TxnTracker *t, Lsn end_lsn)
{
    TxnEntry *e = entry(t, txn_tracker_current(t));

    e->end_lsn = end_lsn;
    e->committed = true;
    t->open = false;
}

Lsn txn_tracker_advance(TxnTracker *t)
{
    while (t->len > 0) {
        TxnEntry *e = &t->ring[t->head];

        if (!e->committed || e->outstanding > 0)
            break;
        if (e->end_lsn > t->durable)
            t->durable = e->end_lsn;
        t->head = (t->head + 1) % t->cap;
        t->len--;
        t->head_seq++;
    }
    return t->durable;
}

size_t txn_tracker_pending(const TxnTracker *t)
{
    return t->len;
}
