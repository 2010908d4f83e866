/* Scope-exit cleanup helpers (the nbdkit / systemd idiom): a variable
 * declared with one of these is released however the function returns,
 * so error paths need no goto ladder. */
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline void mlfs_freep(void *p) { free(*(void **)p); }
static inline void mlfs_closep(int *fd) { if (*fd >= 0) close(*fd); }
static inline void mlfs_fclosep(FILE **f) { if (*f) fclose(*f); }

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(mlfs_freep)
#define _cleanup_close_ _cleanup_(mlfs_closep)
#define _cleanup_fclose_ _cleanup_(mlfs_fclosep)

/* Hand ownership out of a cleanup variable. */
#define steal_pointer(pp) ({ __typeof__(*(pp)) _p = *(pp); *(pp) = NULL; _p; })
#define steal_fd(fdp) ({ int _fd = *(fdp); *(fdp) = -1; _fd; })
