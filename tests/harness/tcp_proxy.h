/*
 * tcp_proxy.h - a TCP proxy between pgfan and the test PostgreSQL that can
 * play a dead network.
 *
 * Listens on 127.0.0.1 on a free port and forwards every connection to a
 * target address, in one thread of the TEST process (never in pgfan). A
 * blackhole stops all forwarding in both directions and stops accepting,
 * without closing anything: both ends keep their TCP sessions (the kernel
 * still acknowledges what they send), nothing goes through, new
 * connections wait in the listen backlog. That is a dead network as an end
 * point sees it when a middlebox holds the session, and what TCP keepalives
 * cannot detect. Restoring resumes forwarding of whatever was queued;
 * connections an end closed meanwhile are closed on the other side then.
 *
 * Ownership: tcp_proxy_start() returns a proxy owned by the caller;
 * tcp_proxy_stop() closes every socket, joins the thread and frees it.
 * Setup errors fail the current Check test. All functions are thread-safe
 * with respect to the forwarding thread.
 */
#ifndef PGFAN_TEST_TCP_PROXY_H
#define PGFAN_TEST_TCP_PROXY_H

#include <stdbool.h>
#include <stddef.h>

typedef struct TcpProxy TcpProxy;

/* Starts forwarding 127.0.0.1:<free port> to host:port (numeric IPv4). */
TcpProxy *tcp_proxy_start(const char *host, int port);
void tcp_proxy_stop(TcpProxy *p);

int tcp_proxy_port(const TcpProxy *p);

/* Stops forwarding and accepting (sockets stay open) / resumes both. */
void tcp_proxy_blackhole(TcpProxy *p);
void tcp_proxy_restore(TcpProxy *p);

/* Connections accepted so far. */
size_t tcp_proxy_accepted(TcpProxy *p);

/* Connections open now (accepted and not yet closed on both sides). */
size_t tcp_proxy_open(TcpProxy *p);

#endif
