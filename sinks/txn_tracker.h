/*
 * txn_tracker.h - which transactions a sink holds durably, from per-record
 * acknowledgements that arrive out of band (broker delivery reports, HTTP
 * responses).
 *
 * A FIFO of entries {end_lsn, outstanding, committed}, one per transaction
 * in stream order. Every record a sink sends is counted against the open
 * transaction's entry, identified by a sequence number the sink passes
 * along with the record (a message opaque) and gives back with its
 * acknowledgement. durable_lsn is the end LSN of the newest transaction
 * that is committed with nothing outstanding and has only such
 * transactions before it; a transaction without records is durable as
 * soon as everything before it is. The tracker owns its ring; sequence
 * numbers stay valid until their entry's acknowledgements are all in.
 */
#ifndef PGFAN_TXN_TRACKER_H
#define PGFAN_TXN_TRACKER_H

#include "../common/lsn.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct TxnEntry {
    Lsn end_lsn;          /* LSN_INVALID until COMMIT, and for an abandoned transaction */
    uint64_t outstanding; /* records sent, not acknowledged */
    bool committed;       /* COMMIT seen (or abandoned): no more records will come */
} TxnEntry;

typedef struct TxnTracker {
    TxnEntry *ring; /* entry of sequence number q: ring[(head + q - head_seq) % cap] */
    size_t cap, head, len;
    uint64_t head_seq;
    bool open;   /* the newest entry is a transaction still receiving records */
    Lsn durable; /* never moves backwards */
} TxnTracker;

void txn_tracker_init(TxnTracker *t);
void txn_tracker_free(TxnTracker *t);

/*
 * BEGIN: opens an entry. A transaction still open is abandoned (a lost
 * connection: it arrives again in full): it counts as committed but moves
 * no position, so only its outstanding records hold the queue.
 */
void txn_tracker_begin(TxnTracker *t);

/* The open transaction's sequence number, opening one if none is open. */
uint64_t txn_tracker_current(TxnTracker *t);

/* A record of transaction seq was sent / acknowledged; acked_n acknowledges
 * n records of seq at once (a batch). */
void txn_tracker_sent(TxnTracker *t, uint64_t seq);
void txn_tracker_acked(TxnTracker *t, uint64_t seq);
void txn_tracker_acked_n(TxnTracker *t, uint64_t seq, uint64_t n);

/* COMMIT of the open transaction (opening an empty one if none is open). */
void txn_tracker_commit(TxnTracker *t, Lsn end_lsn);

/* Pops finished transactions and returns the durable position. */
Lsn txn_tracker_advance(TxnTracker *t);

/* Transactions not yet durable (for status). */
size_t txn_tracker_pending(const TxnTracker *t);

#endif
