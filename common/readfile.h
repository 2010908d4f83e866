/* A whole small file (a configuration, a policy, a key) into memory. */
#pragma once
#include <stddef.h>

/* Reads fd to its end into *buf (malloc'd, NUL-terminated, *len bytes
 * before the NUL).  0, -EFBIG when there are more than max bytes, -ENOMEM,
 * or the read's -errno; *buf is NULL on failure.  Works on pipes and
 * /proc files, whose size is not known before the end. */
int mlfs_read_whole(int fd, size_t max, char **buf, size_t *len);
