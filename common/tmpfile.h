/* Temporary files in the cache that nobody can mistake for a crash's
 * leftover. */
#pragma once

/* Like mkostemp(tmpl, O_CLOEXEC) (tmpl ends in "XXXXXX"), but the file is
 * held with flock(LOCK_EX) before its name appears: a cleaner that removes
 * the temp files nobody holds can never catch it between creation and
 * lock.  The fd, or -1 with errno. */
int mlfs_mkstemp_locked(char *tmpl);
