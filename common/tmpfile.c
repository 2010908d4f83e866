/* The file is made unnamed (O_TMPFILE), locked, and only then linked under
 * the template's name; where the filesystem cannot make unnamed files,
 * mkostemp() and a lock right after it, which leaves a window of a few
 * instructions for a cleaner to see an unlocked temp. */
#include "common/tmpfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <unistd.h>

static int fallback(char *tmpl, size_t n)
{
	memcpy(tmpl + n - 6, "XXXXXX", 6);
	int fd = mkostemp(tmpl, O_CLOEXEC);
	if (fd >= 0)
		(void)flock(fd, LOCK_EX);
	return fd;
}

int mlfs_mkstemp_locked(char *tmpl)
{
	size_t n = strlen(tmpl);
	if (n < 6 || strcmp(tmpl + n - 6, "XXXXXX")) {
		errno = EINVAL;
		return -1;
	}
	char dir[PATH_MAX];
	const char *slash = strrchr(tmpl, '/');
	if (!slash)
		snprintf(dir, sizeof dir, ".");
	else if ((size_t)(slash - tmpl) >= sizeof dir)
		return fallback(tmpl, n);
	else
		snprintf(dir, sizeof dir, "%.*s", (int)(slash - tmpl), tmpl);
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL ? fallback(tmpl, n) : -1;
	(void)flock(fd, LOCK_EX);
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	for (int tries = 0; tries < 100; tries++) {
		unsigned char rnd[6];
		if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
			break;
		for (int i = 0; i < 6; i++)
			tmpl[n - 6 + i] = alphabet[rnd[i] % (sizeof alphabet - 1)];
		/* Naming an unnamed file: through /proc, or AT_EMPTY_PATH (root). */
		if (linkat(AT_FDCWD, proc, AT_FDCWD, tmpl, AT_SYMLINK_FOLLOW) == 0 ||
		    linkat(fd, "", AT_FDCWD, tmpl, AT_EMPTY_PATH) == 0)
			return fd;
		if (errno != EEXIST)
			break;
	}
	close(fd);
	return fallback(tmpl, n);
}
