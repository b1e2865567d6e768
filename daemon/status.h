/*
 * status.h - the status socket server.
 *
 * Operators read pgfan's state from a unix stream socket: on every
 * connection the server renders one JSON document (through the caller's
 * StatusRender callback), writes it, and closes the connection. It does not
 * wait for a request and ignores whatever the client sends.
 *
 * Everything runs from the event loop and nothing blocks: accepted clients
 * are written to non-blockingly; a client that does not read its document
 * within STATUS_WRITE_TIMEOUT is dropped, and at most STATUS_MAX_CLIENTS
 * are served at once (further connections are accepted and closed at once),
 * so a stuck or hostile reader costs at most a bounded amount of memory.
 *
 * Ownership: the server owns its listening socket, a timer descriptor, the
 * connected clients and their rendered documents, and the socket file on
 * disk (unlinked by status_server_free(), unless another process has
 * replaced it meanwhile). It borrows the Loop, which must outlive it.
 */
#ifndef PGFAN_STATUS_H
#define PGFAN_STATUS_H

#include "../common/buf.h"
#include "../common/clock.h"
#include "../common/error.h"
#include "../common/loop.h"

#include <stddef.h>

/* Connections served at once; more are accepted and closed immediately. */
#define STATUS_MAX_CLIENTS 32

/* A client whose document is not fully written by then is dropped. */
#define STATUS_WRITE_TIMEOUT (5 * USECS_PER_SEC)

/* Mode of the socket file: owner and group (the operators' group) only. */
#define STATUS_SOCKET_MODE 0660

typedef struct StatusServer StatusServer;

/*
 * Appends the status document (one JSON object) to out. Called once per
 * connection, from the loop; must not block. out is empty on entry. The
 * server appends a newline when the document does not end with one, so
 * that `socat - UNIX:path` prints a complete line.
 */
typedef void (*StatusRender)(void *arg, Buf *out);

/*
 * Creates the socket at path (mode 0660) and starts serving it from loop.
 *
 * An existing socket file nobody listens on (left by a crash) is replaced.
 * Errors: ERR_CONFIG when the path is empty or longer than a unix socket
 * address allows, when its directory does not exist or is not writable, or
 * when the path exists and is not a socket; ERR_FATAL when another process
 * listens on the path or a system call fails. Returns NULL on error.
 */
StatusServer *status_server_new(Loop *loop, const char *path, StatusRender render, void *arg,
                                PfError *err);

/* Clients being served right now (accepted, document not fully written). */
size_t status_server_client_count(const StatusServer *srv);

/* Closes every client and the listening socket, unlinks the socket file. NULL is a no-op. */
void status_server_free(StatusServer *srv);

#endif
