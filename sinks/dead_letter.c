/*
 * dead_letter.c - append-only NDJSON dead-letter files (dead_letter.h).
 */
#include "dead_letter.h"

#include "../common/buf.h"
#include "../common/mem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool dead_letter_open(DeadLetter *dl, const char *path, const char *what, PfError *err)
{
    dl->path = xstrdup(path);
    dl->what = what;
    dl->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (dl->fd < 0) {
        err_set(err, ERR_CONFIG, "could not open %s dead-letter file \"%s\": %s", what, path,
                strerror(errno));
        err_hint(err, "create its directory or make it writable for pgfan, or set dead_letter "
                      "to another path");
        return false;
    }
    return true;
}

bool dead_letter_sync(DeadLetter *dl, PfError *err)
{
    if (fsync(dl->fd) != 0)
        return err_set(err, ERR_FATAL, "could not fsync %s dead-letter file \"%s\": %s",
                       dl->what, dl->path, strerror(errno));
    return true;
}

bool dead_letter_write(DeadLetter *dl, const char *data, size_t len, bool sync, PfError *err)
{
    while (len > 0) {
        ssize_t n = write(dl->fd, data, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err_set(err, ERR_FATAL, "could not write %s dead-letter file \"%s\": %s", dl->what,
                    dl->path, strerror(n < 0 ? errno : EIO));
            err_hint(err, "the refused records are not confirmed: fix the disk and restart, "
                          "they are sent again");
            return false;
        }
        data += n;
        len -= (size_t)n;
    }
    return !sync || dead_letter_sync(dl, err);
}

void dead_letter_close(DeadLetter *dl)
{
    if (dl->fd >= 0)
        close(dl->fd);
    dl->fd = -1;
    free(dl->path);
    dl->path = NULL;
}

char *url_without_userinfo(const char *url)
{
    const char *host = strstr(url, "://");
    const char *at, *slash;
    Buf b = BUF_INIT;

    if (!host)
        return xstrdup(url);
    host += 3;
    slash = host + strcspn(host, "/?#");
    at = memchr(host, '@', (size_t)(slash - host));
    if (!at)
        return xstrdup(url);
    buf_append(&b, url, (size_t)(host - url));
    buf_append_str(&b, at + 1);
    return b.data;
}
