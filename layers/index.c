/* The per-layer entry table, filled from a tar stream.
 *
 * Every tar entry becomes one fixed-size record; its strings (path, link
 * target, xattr names and values) go into one arena and are referred to by
 * 32-bit offsets.  So a layer costs a record plus its path bytes and no
 * allocation per entry, and the same arrays are what the index file holds.
 *
 * Whiteouts are recognised here, once, and stored as their own kinds with
 * the path they hide: the merge never parses ".wh." again.  Entries the
 * layer has no business containing (".." components, a non-directory root,
 * unhideable whiteouts) are refused and logged, never followed; the rest of
 * the layer is still served.
 *
 * Where libarchive and the runtimes read an entry differently, the entry
 * is stored as the runtimes (Go's archive/tar: containerd, Docker, podman,
 * umoci) would extract it, here, so that every answer made from the table
 * (early or merged, the mount or export) agrees:
 *  - a symlink's mode is 0777 whatever its header says, as on Linux;
 *  - a file that is not sparse is as long as the data its entry carries.
 *    libarchive reports the "realsize" field of any GNU header as the size
 *    (GNU tar and Go read it for sparse entries only), so a header with
 *    junk there (seen with NUL-filled uid/gid fields) came out 2176 bytes
 *    long for 14 bytes of data;
 *  - xattrs that only mean something on the machine that made the layer
 *    (security.selinux) or that steer an overlay filesystem stacked on the
 *    mount (trusted.overlay.*, user.overlay.*, and fuse-overlayfs's own) are
 *    dropped, as umoci and containers/storage drop them when unpacking.
 * Each entry also records how many of its bytes are data rather than holes
 * (`stored`): a sparse file's st_blocks. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "common/log.h"
#include "common/grow.h"
#include "layers/internal.h"

#define OVERFLOW_ID 65534u /* what the kernel shows for ids it cannot map */

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	return mlfs_grow(arr, cap, need, elem, 64, SIZE_MAX);
}

static int arena_add(struct mlfs_layer *l, const void *s, size_t len, bool nul, uint32_t *off)
{
	size_t need = l->arena_len + len + (nul ? 1 : 0);
	if (need >= MLFS_NO_STR)
		return -EFBIG;
	int rc = grow((void **)&l->arena, &l->arena_cap, need, 1);
	if (rc < 0)
		return rc;
	*off = (uint32_t)l->arena_len;
	memcpy(l->arena + l->arena_len, s, len);
	if (nul)
		l->arena[l->arena_len + len] = '\0';
	l->arena_len = need;
	return 0;
}

static uint32_t clamp_id(la_int64_t id, const char *path, const char *what)
{
	if (id < 0 || id >= (la_int64_t)UINT32_MAX) {
		log_warn(MLFS_AREA_LAYERS, "%s: %s %lld out of range, using %u", path, what,
			 (long long)id, OVERFLOW_ID);
		return OVERFLOW_ID;
	}
	return (uint32_t)id;
}

static enum mlfs_entry_kind kind_of(mode_t type)
{
	switch (type) {
	case AE_IFREG: return MLFS_ENTRY_REG;
	case AE_IFDIR: return MLFS_ENTRY_DIR;
	case AE_IFLNK: return MLFS_ENTRY_SYMLINK;
	case AE_IFCHR: return MLFS_ENTRY_CHR;
	case AE_IFBLK: return MLFS_ENTRY_BLK;
	case AE_IFIFO: return MLFS_ENTRY_FIFO;
	case AE_IFSOCK: return MLFS_ENTRY_SOCK;
	default: return 0;
	}
}

static const char *entry_name(struct archive_entry *e)
{
	/* Non-ASCII names that do not convert to the locale still have their
	 * UTF-8 form; filesystems take bytes either way. */
	const char *p = archive_entry_pathname(e);
	return p ? p : archive_entry_pathname_utf8(e);
}

static int refuse(struct mlfs_layer *l, const char *name, const char *why)
{
	log_warn(MLFS_AREA_LAYERS, "layer entry \"%s\" refused: %s", name, why);
	l->refused++;
	return 0;
}

/* Names a mount must not present as its own (see the top of this file). */
static bool foreign_xattr(const char *name)
{
	static const char *const prefixes[] = { "trusted.overlay.", "user.overlay.", "user.fuseoverlayfs." };
	if (!strcmp(name, "security.selinux") || !strcmp(name, "user.containers.override_stat"))
		return true;
	for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++)
		if (!strncmp(name, prefixes[i], strlen(prefixes[i])))
			return true;
	return false;
}

static int add_xattrs(struct mlfs_layer *l, struct archive_entry *e, struct mlfs_ient *ie, const char *path)
{
	int n = archive_entry_xattr_reset(e);
	if (n <= 0)
		return 0;
	if (n > UINT16_MAX)
		return -E2BIG;
	int rc = grow((void **)&l->xattrs, &l->cap_xattrs, l->n_xattrs + (size_t)n,
		      sizeof *l->xattrs);
	if (rc < 0)
		return rc;
	if (l->n_xattrs + (size_t)n >= UINT32_MAX)
		return -EFBIG;
	ie->xattr_first = (uint32_t)l->n_xattrs;
	const char *name;
	const void *value;
	size_t size;
	while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
		if (ie->n_xattrs == n)
			break;
		if (size > UINT32_MAX / 2)
			return -EFBIG;
		if (foreign_xattr(name)) {
			log_debug(MLFS_AREA_LAYERS, "%s: xattr %s dropped", path, name);
			continue;
		}
		/* libarchive's pax writer stores each xattr twice (LIBARCHIVE.xattr
		 * and SCHILY.xattr) and its reader hands back both. */
		struct mlfs_ixattr *x = NULL;
		for (uint32_t j = ie->xattr_first; j < l->n_xattrs; j++)
			if (!strcmp(l->arena + l->xattrs[j].name, name))
				x = &l->xattrs[j];
		bool dup = x != NULL;
		if (!dup) {
			x = &l->xattrs[l->n_xattrs];
			if ((rc = arena_add(l, name, strlen(name), true, &x->name)) < 0)
				return rc;
		}
		if ((rc = arena_add(l, value ? value : "", size, false, &x->value)) < 0)
			return rc;
		x->len = (uint32_t)size;
		if (!dup) {
			l->n_xattrs++;
			ie->n_xattrs++;
		}
	}
	return 0;
}

/* Copies the entry's bytes to the data file at base; the offsets within
 * the file come from libarchive, so sparse files keep their holes.  A
 * sparse file's blocks lie within its size; a file that is not sparse is
 * as long as its blocks reach (*end).  *stored counts the bytes written. */
static int copy_data(struct mlfs_tar_reader *r, struct mlfs_store *s, uint64_t base, uint64_t size,
		     bool sparse, uint64_t *end, uint64_t *stored)
{
	uint64_t limit = sparse ? size : (uint64_t)INT64_MAX - base;
	*end = *stored = 0;
	for (;;) {
		const void *buf;
		size_t len;
		int64_t off;
		int rc = mlfs_tar_reader_data(r, &buf, &len, &off);
		if (rc <= 0)
			return rc;
		if (off < 0 || (uint64_t)off > limit || len > limit - (uint64_t)off)
			return -EBADMSG;
		if (len && (rc = mlfs_store_pwrite(s, buf, len, base + (uint64_t)off)) < 0)
			return rc;
		if ((uint64_t)off + len > *end)
			*end = (uint64_t)off + len;
		*stored += len;
	}
}

/* The layer's own files of a seekable format: its TOC and the landmarks
 * that order its prefetch.  stargz-snapshotter hides them; so do we, on
 * both paths (TOC and stream), so that the two build the same tree. */
static bool format_entry(const char *path)
{
	return !strcmp(path, "stargz.index.json") || !strcmp(path, ".prefetch.landmark") ||
	       !strcmp(path, ".no.prefetch.landmark");
}

int mlfs_index_add(struct mlfs_layer *l, struct archive_entry *e, struct mlfs_tar_reader *r,
		   struct mlfs_store *s)
{
	char path[MLFS_PATH_MAX], target[MLFS_PATH_MAX];
	size_t path_len, target_len = 0;
	const char *name = entry_name(e);
	if (!name)
		return refuse(l, "", "no name");
	int rc = mlfs_path_normalize(name, path, &path_len);
	if (rc == -EINVAL)
		return refuse(l, name, "\"..\" in path");
	if (rc < 0)
		return refuse(l, name, "name too long");
	if (l->hide_format_entries && format_entry(path))
		return 0;

	struct mlfs_ient ie = { .link = MLFS_NO_STR };
	const char *hardlink = archive_entry_hardlink(e);
	if (!hardlink && archive_entry_hardlink_utf8(e))
		hardlink = archive_entry_hardlink_utf8(e);
	int wh = mlfs_path_whiteout(path, path_len, target, &target_len);
	if (wh < 0)
		return refuse(l, name, "whiteout of an impossible name");
	if (wh == 1)
		return 0;
	if (wh == MLFS_ENTRY_WHITEOUT || wh == MLFS_ENTRY_OPAQUE) {
		ie.kind = (uint8_t)wh;
		memcpy(path, target, target_len + 1);
		path_len = target_len;
	} else if (hardlink) {
		rc = mlfs_path_normalize(hardlink, target, &target_len);
		if (rc < 0)
			return refuse(l, name, "bad hardlink target");
		if (target_len == 0 || !strcmp(target, path))
			return refuse(l, name, "hardlink to itself or the root");
		ie.kind = MLFS_ENTRY_HARDLINK;
		if ((rc = arena_add(l, target, target_len, true, &ie.link)) < 0)
			return rc;
	} else {
		ie.kind = (uint8_t)kind_of(archive_entry_filetype(e));
		if (!ie.kind)
			return refuse(l, name, "unknown file type");
	}
	if (path_len == 0 && ie.kind != MLFS_ENTRY_DIR && ie.kind != MLFS_ENTRY_OPAQUE)
		return refuse(l, name, "the root must be a directory");

	ie.mode = (uint32_t)archive_entry_mode(e);
	if (ie.kind == MLFS_ENTRY_HARDLINK || ie.kind == MLFS_ENTRY_REG)
		ie.mode = (ie.mode & 07777) | S_IFREG;
	if (ie.kind == MLFS_ENTRY_SYMLINK)
		ie.mode = S_IFLNK | 0777; /* Linux has no other symlink mode */
	ie.uid = clamp_id(archive_entry_uid(e), path, "uid");
	ie.gid = clamp_id(archive_entry_gid(e), path, "gid");
	if (archive_entry_mtime_is_set(e)) {
		ie.mtime = archive_entry_mtime(e);
		long ns = archive_entry_mtime_nsec(e);
		ie.mtime_nsec = (ns >= 0 && ns < 1000000000L) ? (uint32_t)ns : 0;
	}
	if (ie.kind == MLFS_ENTRY_SYMLINK) {
		const char *t = archive_entry_symlink(e);
		if (!t)
			t = archive_entry_symlink_utf8(e);
		if (!t)
			return refuse(l, name, "symlink without target");
		if ((rc = arena_add(l, t, strlen(t), true, &ie.link)) < 0)
			return rc;
	}
	if (ie.kind == MLFS_ENTRY_CHR || ie.kind == MLFS_ENTRY_BLK)
		ie.data_off = makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
	if (ie.kind == MLFS_ENTRY_REG && archive_entry_size_is_set(e)) {
		la_int64_t size = archive_entry_size(e);
		if (size < 0 || (uint64_t)size > (uint64_t)INT64_MAX - l->data_size)
			return -EFBIG;
		ie.size = ie.stored = (uint64_t)size;
		ie.data_off = l->data_size;
		/* Without a reader (a TOC's entry) the bytes come later, by chunk. */
		if (r) {
			bool sparse = archive_entry_sparse_count(e) > 0;
			uint64_t end;
			if ((rc = copy_data(r, s, ie.data_off, ie.size, sparse, &end, &ie.stored)) < 0)
				return rc;
			if (!sparse && end != ie.size) {
				log_warn(MLFS_AREA_LAYERS, "%s: header says %llu bytes, the archive holds %llu: "
					 "using %llu, as GNU tar and Go's archive/tar do", path,
					 (unsigned long long)ie.size, (unsigned long long)end,
					 (unsigned long long)end);
				ie.size = end;
			}
		}
		l->data_size += ie.size;
	}
	if ((rc = add_xattrs(l, e, &ie, path)) < 0)
		return rc;
	if ((rc = arena_add(l, path, path_len, true, &ie.path)) < 0)
		return rc;
	if (l->n_ents >= UINT32_MAX - 1)
		return -EFBIG;
	if ((rc = grow((void **)&l->ents, &l->cap_ents, l->n_ents + 1, sizeof *l->ents)) < 0)
		return rc;
	l->ents[l->n_ents++] = ie;
	return 0;
}

int mlfs_index_build(struct mlfs_layer *l, struct mlfs_tar_reader *r, struct mlfs_store *s)
{
	for (;;) {
		struct archive_entry *e;
		int rc = mlfs_tar_reader_next(r, &e);
		if (rc <= 0)
			return rc;
		if ((rc = mlfs_index_add(l, e, r, s)) < 0)
			return rc;
	}
}

void mlfs_index_clear(struct mlfs_layer *l)
{
	free(l->ents);
	free(l->xattrs);
	free(l->arena);
	l->ents = NULL;
	l->xattrs = NULL;
	l->arena = NULL;
	l->n_ents = l->cap_ents = l->n_xattrs = l->cap_xattrs = 0;
	l->arena_len = l->arena_cap = 0;
	l->data_size = 0;
	l->refused = 0;
}
