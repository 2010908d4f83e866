/* Directories made as `mkdir -p` makes them. */
#pragma once
#include <sys/types.h>

/* Makes path and its missing parents (parents 0755, path itself `mode`);
 * an existing directory is fine.  0 or -errno. */
int mlfs_mkdir_p(const char *path, mode_t mode);
