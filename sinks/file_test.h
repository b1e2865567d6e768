/*
 * file_test.h - test seam of the file sink (file.c). Tests only.
 *
 * Disk-full, quota and fsync failures cannot be provoked on demand in a
 * unit test (no tmpfs of our own), so the two system calls whose failures
 * the file sink must survive or report can be replaced. Production code
 * never calls this; the defaults are write(2) and fsync(2).
 */
#ifndef PGFAN_FILE_TEST_H
#define PGFAN_FILE_TEST_H

#include <sys/types.h>

typedef ssize_t (*FileSinkWriteFn)(int fd, const void *data, size_t len);
typedef int (*FileSinkFsyncFn)(int fd);

/* Replaces write(2) and fsync(2) in every file sink; NULL restores the real one. */
void file_sink_set_io_for_tests(FileSinkWriteFn write_fn, FileSinkFsyncFn fsync_fn);

#endif
