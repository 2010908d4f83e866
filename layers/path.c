/* Tar member names as the merge sees them.
 *
 * Layers come from tools that spell the same path "./usr/bin", "usr/bin/",
 * "/usr//bin": all of them must meet at one key.  A ".." component is never
 * resolved, only refused — following it could reach outside the root, and
 * no layer builder emits one for a legitimate file. */
#include <errno.h>
#include <string.h>

#include "layers/internal.h"

#define NAME_MAX_BYTES 255 /* what a FUSE reply can carry */

int mlfs_path_normalize(const char *in, char *out, size_t *out_len)
{
	size_t o = 0;
	const char *p = in;
	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		size_t n = strcspn(p, "/");
		if (n == 1 && p[0] == '.') {
			p += n;
			continue;
		}
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return -EINVAL;
		if (n > NAME_MAX_BYTES)
			return -ENAMETOOLONG;
		if (o + (o ? 1 : 0) + n >= MLFS_PATH_MAX)
			return -ENAMETOOLONG;
		if (o)
			out[o++] = '/';
		memcpy(out + o, p, n);
		o += n;
		p += n;
	}
	out[o] = '\0';
	*out_len = o;
	return 0;
}

int mlfs_path_whiteout(const char *path, size_t len, char *out, size_t *out_len)
{
	const char *slash = memrchr(path, '/', len);
	size_t dir_len = slash ? (size_t)(slash - path) : 0;
	const char *base = slash ? slash + 1 : path;
	size_t base_len = len - (size_t)(base - path);

	if (base_len < 4 || memcmp(base, ".wh.", 4) != 0)
		return 0;
	if (base_len == 12 && !memcmp(base, ".wh..wh..opq", 12)) {
		memcpy(out, path, dir_len);
		out[dir_len] = '\0';
		*out_len = dir_len;
		return MLFS_ENTRY_OPAQUE;
	}
	/* ".wh..wh.plnk", ".wh..wh.aufs": AUFS bookkeeping, never content. */
	if (base_len >= 8 && !memcmp(base, ".wh..wh.", 8))
		return 1;
	const char *name = base + 4;
	size_t name_len = base_len - 4;
	if (name_len == 0 || (name_len == 1 && name[0] == '.') ||
	    (name_len == 2 && name[0] == '.' && name[1] == '.'))
		return -EINVAL;
	size_t o = 0;
	if (dir_len) {
		memcpy(out, path, dir_len);
		out[dir_len] = '/';
		o = dir_len + 1;
	}
	memcpy(out + o, name, name_len);
	o += name_len;
	out[o] = '\0';
	*out_len = o;
	return MLFS_ENTRY_WHITEOUT;
}
