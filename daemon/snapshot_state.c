/*
 * snapshot_state.c - the snapshot state file (snapshot_state.h).
 *
 * One line: "<kind> <slot> <lsn>\n" with kind "in progress" or "done". The
 * slot name is written so that a file copied or renamed by hand cannot
 * vouch for another slot.
 */
#include "snapshot_state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_MAX 256

static const char in_progress_word[] = "in progress ";
static const char done_word[] = "done ";

const char *snap_state_kind_name(SnapStateKind kind)
{
    switch (kind) {
    case SNAP_STATE_NONE:
        return "none";
    case SNAP_STATE_IN_PROGRESS:
        return "in progress";
    case SNAP_STATE_DONE:
        return "done";
    }
    return "unknown";
}

void snap_state_path(Buf *out, const char *dir, const char *slot)
{
    buf_printf(out, "%s/pgfan-%s.snapshot", dir, slot);
}

static bool corrupt(PfError *err, const char *path, const char *why)
{
    err_set(err, ERR_FATAL, "could not read the snapshot state \"%s\": %s", path, why);
    err_hint(err, "the file is written by pgfan only; if it was edited or belongs to another "
                  "slot, delete it and drop the replication slot so the snapshot runs again");
    return false;
}

/* Parses "<slot> <lsn>\n" after the kind word. */
static bool parse_rest(const char *rest, const char *slot, Lsn *lsn)
{
    size_t n = strlen(slot);
    const char *p;
    const char *end;

    if (strncmp(rest, slot, n) != 0 || rest[n] != ' ')
        return false;
    p = rest + n + 1;
    end = strchr(p, '\n');
    if (!end || end[1] != '\0')
        return false;
    return lsn_parse(p, (size_t)(end - p), lsn);
}

bool snap_state_read(const char *dir, const char *slot, SnapState *out, PfError *err)
{
    Buf path = BUF_INIT;
    char text[STATE_MAX];
    size_t len;
    FILE *f;
    bool ok = true;

    out->kind = SNAP_STATE_NONE;
    out->consistent_lsn = LSN_INVALID;
    snap_state_path(&path, dir, slot);
    f = fopen(path.data, "r");
    if (!f) {
        if (errno != ENOENT) {
            err_set(err, ERR_FATAL, "could not read the snapshot state \"%s\": %s", path.data,
                    strerror(errno));
            err_hint(err, "pgfan needs to read and write files in [source] state_dir");
            ok = false;
        }
        buf_free(&path);
        return ok;
    }
    len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    if (strncmp(text, in_progress_word, sizeof in_progress_word - 1) == 0 &&
        parse_rest(text + sizeof in_progress_word - 1, slot, &out->consistent_lsn))
        out->kind = SNAP_STATE_IN_PROGRESS;
    else if (strncmp(text, done_word, sizeof done_word - 1) == 0 &&
             parse_rest(text + sizeof done_word - 1, slot, &out->consistent_lsn))
        out->kind = SNAP_STATE_DONE;
    else
        ok = corrupt(err, path.data, "it is not \"in progress|done <slot> <lsn>\" for this slot");
    buf_free(&path);
    return ok;
}

/* fsync of the directory, so the rename itself survives a crash. */
static bool sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    bool ok;

    if (fd < 0)
        return false;
    ok = fsync(fd) == 0;
    close(fd);
    return ok;
}

static bool write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data += n;
        len -= (size_t)n;
    }
    return true;
}

bool snap_state_write(const char *dir, const char *slot, const SnapState *state, PfError *err)
{
    Buf path = BUF_INIT, tmp = BUF_INIT, text = BUF_INIT;
    char lsn[LSN_TEXT_SIZE];
    int fd;
    bool ok = false;

    snap_state_path(&path, dir, slot);
    buf_printf(&tmp, "%s.tmp", path.data);
    buf_printf(&text, "%s%s %s\n", state->kind == SNAP_STATE_DONE ? done_word : in_progress_word,
               slot, lsn_format(state->consistent_lsn, lsn));
    fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd >= 0) {
        ok = write_all(fd, text.data, text.len) && fsync(fd) == 0;
        ok = close(fd) == 0 && ok;
        ok = ok && rename(tmp.data, path.data) == 0 && sync_dir(dir);
    }
    if (!ok) {
        err_set(err, ERR_FATAL, "could not write the snapshot state \"%s\": %s", path.data,
                strerror(errno));
        err_hint(err, "pgfan needs to create files in [source] state_dir (the systemd unit's "
                      "StateDirectory, a volume in a container)");
        unlink(tmp.data);
    }
    buf_free(&path);
    buf_free(&tmp);
    buf_free(&text);
    return ok;
}

bool snap_state_remove(const char *dir, const char *slot, PfError *err)
{
    Buf path = BUF_INIT;
    bool ok = true;

    snap_state_path(&path, dir, slot);
    if (unlink(path.data) != 0 && errno != ENOENT)
        ok = err_set(err, ERR_FATAL, "could not remove the snapshot state \"%s\": %s", path.data,
                     strerror(errno));
    else if (!sync_dir(dir))
        ok = err_set(err, ERR_FATAL,
                     "could not remove the snapshot state \"%s\": syncing "
                     "the directory: %s",
                     path.data, strerror(errno));
    buf_free(&path);
    return ok;
}

bool snap_state_check_dir(const char *dir, PfError *err)
{
    struct stat st;
    const char *why = NULL;

    if (stat(dir, &st) != 0)
        why = strerror(errno);
    else if (!S_ISDIR(st.st_mode))
        why = "not a directory";
    if (why) {
        err_set(err, ERR_CONFIG, "could not use [source] state_dir \"%s\": %s", dir, why);
        err_hint(err, "create the directory, or set state_dir to one pgfan may write (the "
                      "snapshot = initial bookkeeping lives there)");
        return false;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        err_set(err, ERR_CONFIG, "could not use [source] state_dir \"%s\": %s", dir,
                strerror(errno));
        err_hint(err, "give pgfan's user write access to it, or set state_dir to a directory "
                      "it may write (the snapshot = initial bookkeeping lives there)");
        return false;
    }
    return true;
}
