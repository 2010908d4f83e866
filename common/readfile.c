/* Why the buffer grows instead of being malloc'd at the maximum size once:
 * glibc serves a large malloc with mmap and, when that block is freed,
 * raises its mmap threshold to the block's size for the rest of the
 * process (the "dynamic mmap threshold"; the trim threshold goes to twice
 * that).  A 4 MiB buffer for a 100-byte policy.json, freed at startup,
 * made every later buffer under 4 MiB (a TOC, a chunk, a decompressor's
 * window) come from the per-thread heaps, where freed memory stays
 * resident: a seekable mount's daemon peaked 6-10 MB higher for it.  A
 * buffer the size of what is read costs nothing of the kind. */
#include "common/readfile.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/grow.h"

int mlfs_read_whole(int fd, size_t max, char **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	_cleanup_free_ char *b = NULL;
	size_t cap = 0, n = 0;
	for (;;) {
		/* Room for one byte past max (to tell "too large") and the NUL. */
		int r = mlfs_grow((void **)&b, &cap, n + 2, 1, 4096, max + 3);
		if (r < 0)
			return r;
		size_t room = cap - n - 1;
		if (room > max + 1 - n)
			room = max + 1 - n;
		ssize_t got = read(fd, b + n, room);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			break;
		n += (size_t)got;
		if (n > max)
			return -EFBIG;
	}
	b[n] = '\0';
	*buf = steal_pointer(&b);
	*len = n;
	return 0;
}
