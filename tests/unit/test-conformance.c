/* layers/: archives that libarchive reads differently from the runtimes
 * (Go's archive/tar in containerd, Docker, podman, umoci), built byte by
 * byte, and what the index must make of them: what Go extracts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "layergen.h"
#include "tap.h"

/* ---- a hand-made tar stream ---- */

struct buf {
	unsigned char *p;
	size_t len, cap;
};

static void put(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			abort();
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void zeros(struct buf *b, size_t n)
{
	static const unsigned char z[4096];
	while (n) {
		size_t k = n < sizeof z ? n : sizeof z;
		put(b, z, k);
		n -= k;
	}
}

struct hdr {
	const char *name;
	char type;            /* '0', '2', 'x', 'L', ... */
	const char *mode;     /* 8 bytes as written; NULL: "0000644" */
	const char *link;
	size_t size;
	bool nul_ids;         /* uid and gid all NUL bytes instead of octal */
	bool gnu;             /* magic "ustar  \0" instead of "ustar\0" "00" */
	bool v7;              /* no magic at all */
	const char *realsize; /* GNU: bytes at offset 483 */
};

static void header(struct buf *b, const struct hdr *h)
{
	unsigned char x[512] = { 0 };
	memcpy(x, h->name, strlen(h->name));
	memcpy(x + 100, h->mode ? h->mode : "0000644", 8);
	if (!h->nul_ids) {
		memcpy(x + 108, "0000000", 8);
		memcpy(x + 116, "0000000", 8);
	}
	char f[13];
	snprintf(f, sizeof f, "%011zo", h->size);
	memcpy(x + 124, f, 12);
	snprintf(f, sizeof f, "%011o", 1700000000u);
	memcpy(x + 136, f, 12);
	x[156] = (unsigned char)h->type;
	if (h->link)
		memcpy(x + 157, h->link, strlen(h->link));
	if (h->gnu)
		memcpy(x + 257, "ustar  ", 8);
	else if (!h->v7)
		memcpy(x + 257, "ustar\0" "00", 8);
	if (h->realsize)
		memcpy(x + 483, h->realsize, strlen(h->realsize));
	memset(x + 148, ' ', 8);
	unsigned sum = 0;
	for (size_t i = 0; i < sizeof x; i++)
		sum += x[i];
	snprintf(f, sizeof f, "%06o", sum);
	memcpy(x + 148, f, 7); /* six digits, NUL, and the space already there */
	put(b, x, sizeof x);
}

static void file(struct buf *b, struct hdr h, const char *data, bool pad)
{
	h.type = h.type ? h.type : '0';
	h.size = strlen(data);
	header(b, &h);
	put(b, data, h.size);
	if (pad)
		zeros(b, (512 - h.size % 512) % 512);
}

/* A PAX extended header with one record, its body padded. */
static void pax(struct buf *b, const char *key, const char *value)
{
	char rec[512];
	int n = (int)strlen(key) + (int)strlen(value) + 3;
	int len = n + (int)snprintf(NULL, 0, "%d", n);
	if ((int)snprintf(NULL, 0, "%d", len) + n != len)
		len++;
	snprintf(rec, sizeof rec, "%d %s=%s\n", len, key, value);
	header(b, &(struct hdr){ .name = "PaxHeaders/x", .type = 'x', .size = strlen(rec) });
	put(b, rec, strlen(rec));
	zeros(b, 512 - strlen(rec));
}

static void longname(struct buf *b, const char *name)
{
	header(b, &(struct hdr){ .name = "././@LongLink", .type = 'L', .size = strlen(name) + 1 });
	put(b, name, strlen(name) + 1);
	zeros(b, 512 - strlen(name) - 1);
}

static const char *dir;

/* Indexes the stream; *l gets the layer (0) or the error (-errno). */
static int open_buf(const struct buf *b, struct mlfs_layer **l)
{
	char path[4200], cache[4200];
	snprintf(path, sizeof path, "%s/layer.tar", dir);
	snprintf(cache, sizeof cache, "%s/cache", dir);
	if (lg_write_bytes(path, b->p, b->len) < 0)
		return -EIO;
	struct mlfs_err err = { 0 };
	*l = NULL;
	int rc = lg_open(cache, path, NULL, NULL, l, &err);
	if (rc < 0)
		tap_diag("open: %s", err.msg);
	return rc;
}

static size_t find(struct mlfs_layer *l, const char *path, struct mlfs_entry *e)
{
	for (size_t i = 0; l && i < mlfs_layer_count(l); i++) {
		mlfs_layer_entry(l, i, e);
		if (!strcmp(e->path, path))
			return i;
	}
	memset(e, 0, sizeof *e);
	return SIZE_MAX;
}

/* path's content is want (and nothing more). */
static bool content_is(struct mlfs_layer *l, const char *path, const char *want)
{
	struct mlfs_entry e;
	size_t i = find(l, path, &e);
	if (i == SIZE_MAX)
		return false;
	char got[8192];
	ssize_t n = mlfs_layer_pread(l, i, got, sizeof got, 0);
	if (n != (ssize_t)strlen(want) || e.size != strlen(want) || memcmp(got, want, strlen(want))) {
		tap_diag("%s: %zd bytes read, size %llu, want %zu", path, n, (unsigned long long)e.size,
			 strlen(want));
		return false;
	}
	return true;
}

/* ---- the cases ---- */

static void symlink_modes(void)
{
	struct buf b = { 0 };
	header(&b, &(struct hdr){ .name = "d/", .type = '5', .mode = "0000755" });
	header(&b, &(struct hdr){ .name = "d/zero", .type = '2', .mode = "0000000", .link = "target" });
	header(&b, &(struct hdr){ .name = "d/odd", .type = '2', .mode = "0004751", .link = "target" });
	zeros(&b, 1024);
	struct mlfs_layer *l;
	tap_is_int(open_buf(&b, &l), 0, "symlinks: indexed");
	struct mlfs_entry e;
	find(l, "d/zero", &e);
	tap_is_int(e.mode, S_IFLNK | 0777, "a symlink of mode 0 is lrwxrwxrwx");
	find(l, "d/odd", &e);
	tap_is_int(e.mode, S_IFLNK | 0777, "a symlink of mode 4751 is lrwxrwxrwx");
	/* The merged tree takes its metadata from the same entry. */
	struct mlfs_tree *t = NULL;
	struct mlfs_err err;
	uint32_t node;
	unsigned layer;
	size_t entry;
	if (l && mlfs_tree_merge(&l, 1, &t, &err) == 0 && mlfs_tree_lookup_path(t, "d/zero", &node) == 0) {
		mlfs_tree_entry(t, node, &e, &layer, &entry);
		tap_is_int(e.mode, S_IFLNK | 0777, "the merged tree agrees");
	} else {
		tap_ok(false, "the merged tree agrees");
	}
	mlfs_tree_free(t);
	mlfs_layer_free(l);
	free(b.p);
}

static void misread_sizes(void)
{
	static const char hello[] = "hello, world!\n";
	static const struct {
		const char *what;
		struct hdr h;
	} cases[] = {
		{ "ustar, NUL uid/gid", { .name = "hello.txt", .nul_ids = true } },
		{ "v7, NUL uid/gid", { .name = "hello.txt", .nul_ids = true, .v7 = true } },
		{ "GNU, NUL uid/gid", { .name = "hello.txt", .nul_ids = true, .gnu = true } },
		/* libarchive 3.6.2 reads "realsize" of every GNU header: 2176 bytes here. */
		{ "GNU, NUL uid/gid, junk realsize", { .name = "hello.txt", .nul_ids = true, .gnu = true,
							.realsize = "00000004200" } },
		{ "GNU, realsize smaller than the data", { .name = "hello.txt", .gnu = true, .realsize = "3" } },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct buf b = { 0 };
		file(&b, cases[i].h, hello, true);
		file(&b, (struct hdr){ .name = "after.txt" }, "abc", true);
		zeros(&b, 1024);
		struct mlfs_layer *l;
		tap_is_int(open_buf(&b, &l), 0, cases[i].what);
		tap_ok(content_is(l, "hello.txt", hello), "%s: 14 bytes, as Go and GNU tar read them",
		       cases[i].what);
		tap_ok(content_is(l, "after.txt", "abc"), "%s: the next entry intact", cases[i].what);
		struct mlfs_entry e;
		find(l, "hello.txt", &e);
		tap_is_int(e.uid, 0, "NUL uid is 0");
		mlfs_layer_free(l);
		free(b.p);
	}
}

/* How an archive may end.  want: 0 when Go's archive/tar reads it to a
 * clean end (and so must we), else it fails (and we keep failing), except
 * where noted. */
static void endings(void)
{
	static const char hello[] = "hello, world!\n";
	enum tail { PAX_EOF, PAX_Z1, PAX_Z2, PAX_PAX_Z2, LONG_Z2, PAX_Z1_PARTIAL, PAX_GARBAGE, PAX_Z1_GARBAGE,
		    NO_END, Z1, Z1_PARTIAL, Z2_GARBAGE, Z1_GARBAGE, NO_PAD, SHORT_PAD, CUT_DATA, PARTIAL_HEADER };
	static const struct {
		enum tail tail;
		const char *what;
		int want;
	} cases[] = {
		{ PAX_EOF, "PAX header last, then the stream ends", 0 },
		{ PAX_Z1, "PAX header last, then one zero block", 0 },
		{ PAX_Z2, "PAX header last, then the end-of-archive blocks", 0 },
		{ PAX_PAX_Z2, "two PAX headers last, then the end-of-archive blocks", 0 },
		{ LONG_Z2, "GNU long name last, then the end-of-archive blocks", 0 },
		{ PAX_Z1_PARTIAL, "PAX header, a zero block and part of another (Go: unexpected EOF)", -EBADMSG },
		{ PAX_GARBAGE, "PAX header, then a header with a bad checksum", -EBADMSG },
		{ PAX_Z1_GARBAGE, "PAX header, a zero block, then junk (Go: invalid header)", -EBADMSG },
		{ NO_END, "no end-of-archive blocks", 0 },
		{ Z1, "one end-of-archive block", 0 },
		/* libarchive ends at one zero block whatever follows; Go fails on
		 * these.  Kept: the stream was digest-checked, and no entry is lost. */
		{ Z1_PARTIAL, "one zero block and part of another (Go fails; accepted)", 0 },
		{ Z1_GARBAGE, "one zero block, then junk (Go fails; accepted)", 0 },
		{ Z2_GARBAGE, "junk after the end-of-archive blocks", 0 },
		{ NO_PAD, "the last file's data not padded, then the stream ends", 0 },
		{ SHORT_PAD, "the last file's padding cut short", 0 },
		{ CUT_DATA, "the last file's data cut short", -EBADMSG },
		{ PARTIAL_HEADER, "a partial header at the end", -EBADMSG },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct buf b = { 0 };
		enum tail t = cases[i].tail;
		file(&b, (struct hdr){ .name = "first.txt" }, "first", true);
		file(&b, (struct hdr){ .name = "hello.txt" }, hello,
		     t != NO_PAD && t != SHORT_PAD && t != CUT_DATA);
		static const unsigned char junk[512] = { 1, 2, 3, 4, 5, 6, 7, 8 };
		switch (t) {
		case PAX_PAX_Z2:
			pax(&b, "mtime", "1.5");
			/* fall through */
		case PAX_EOF: case PAX_Z1: case PAX_Z2: case PAX_Z1_PARTIAL: case PAX_GARBAGE: case PAX_Z1_GARBAGE:
			pax(&b, "path", "nothing/follows");
			break;
		case LONG_Z2:
			longname(&b, "a/very/long/name/that/names/nothing");
			break;
		default:
			break;
		}
		switch (t) {
		case PAX_Z1: case Z1: zeros(&b, 512); break;
		case PAX_Z2: case PAX_PAX_Z2: case LONG_Z2: zeros(&b, 1024); break;
		case PAX_Z1_PARTIAL: case Z1_PARTIAL: zeros(&b, 700); break;
		case PAX_GARBAGE: put(&b, junk, sizeof junk); zeros(&b, 1024); break;
		case PAX_Z1_GARBAGE: case Z1_GARBAGE: zeros(&b, 512); put(&b, junk, sizeof junk); break;
		case Z2_GARBAGE: zeros(&b, 1024); put(&b, junk, sizeof junk); break;
		case SHORT_PAD: zeros(&b, 100); break;
		case CUT_DATA: b.len -= 4; break;
		case PARTIAL_HEADER: zeros(&b, 300); break;
		default: break;
		}
		struct mlfs_layer *l;
		int rc = open_buf(&b, &l);
		tap_is_int(rc, cases[i].want, cases[i].what);
		if (rc == 0) {
			tap_is_int(mlfs_layer_count(l), 2, "  both files indexed");
			tap_ok(content_is(l, "first.txt", "first") && content_is(l, "hello.txt", hello),
			       "  and read back whole");
		}
		mlfs_layer_free(l);
		free(b.p);
	}
}

static void xattrs(const char *cache)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/x.tar", dir);
	static const char v[] = "system_u:object_r:container_file_t:s0";
	static const unsigned char cap[20] = { 1, 0, 0, 2, 0x20 };
	const struct lg_entry ents[] = {
		{ .path = "selinux", .data = "a", .xname = "security.selinux", .xval = v, .xlen = sizeof v },
		{ .path = "opaque", .type = 'd', .xname = "trusted.overlay.opaque", .xval = "y", .xlen = 1 },
		{ .path = "redirect", .type = 'd', .xname = "trusted.overlay.redirect", .xval = "/x", .xlen = 2 },
		{ .path = "useropaque", .type = 'd', .xname = "user.overlay.opaque", .xval = "y", .xlen = 1 },
		{ .path = "fuse", .data = "b", .xname = "user.fuseoverlayfs.override_stat", .xval = "0:0:4755", .xlen = 8 },
		{ .path = "override", .data = "b", .xname = "user.containers.override_stat", .xval = "0:0:4755", .xlen = 8 },
		{ .path = "user", .data = "c", .xname = "user.comment", .xval = "kept", .xlen = 4 },
		{ .path = "ping", .data = "d", .xname = "security.capability", .xval = cap, .xlen = sizeof cap },
		{ .path = "trusted", .data = "e", .xname = "trusted.other", .xval = "kept", .xlen = 4 },
	};
	lg_write(path, 'n', ents, sizeof ents / sizeof *ents);
	struct mlfs_layer *l = NULL;
	struct mlfs_err err;
	tap_is_int(lg_open(cache, path, NULL, NULL, &l, &err), 0, "xattrs: indexed");
	static const struct {
		const char *path;
		const char *xattr; /* kept, or NULL: dropped */
	} want[] = {
		{ "selinux", NULL }, { "opaque", NULL }, { "redirect", NULL }, { "useropaque", NULL },
		{ "fuse", NULL }, { "override", NULL }, { "user", "user.comment" },
		{ "ping", "security.capability" }, { "trusted", "trusted.other" },
	};
	for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
		struct mlfs_entry e;
		size_t j = find(l, want[i].path, &e);
		const char *name = NULL;
		const void *val;
		size_t len;
		if (j != SIZE_MAX && e.n_xattrs == 1)
			mlfs_layer_xattr(l, j, 0, &name, &val, &len);
		tap_ok(j != SIZE_MAX && e.n_xattrs == (want[i].xattr ? 1u : 0u) &&
		       (!want[i].xattr || !strcmp(name, want[i].xattr)),
		       "%s: %s", want[i].path, want[i].xattr ? "its xattr kept" : "its xattr dropped");
	}
	mlfs_layer_free(l);
}

#define SPARSE_SIZE (8u << 20)

static void stored_bytes(const char *cache)
{
	char src[4200], f[4300], tar[4200], cmd[16384];
	snprintf(src, sizeof src, "%s/src", dir);
	mkdir(src, 0755);
	snprintf(f, sizeof f, "%s/holes", src);
	int fd = open(f, O_WRONLY | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, SPARSE_SIZE) < 0 || pwrite(fd, "A", 1, 4096) != 1 ||
	    pwrite(fd, "C", 1, SPARSE_SIZE - 1) != 1)
		abort();
	close(fd);
	snprintf(f, sizeof f, "%s/dense", src);
	lg_write_bytes(f, "0123456789", 10);
	for (int pass = 0; pass < 2; pass++) {
		const char *format = pass ? "posix" : "gnu";
		snprintf(tar, sizeof tar, "%s/sparse-%s.tar", dir, format);
		snprintf(cmd, sizeof cmd, "tar --sparse --format=%s -C '%s' -cf '%s' holes dense", format, src, tar);
		if (system(cmd) != 0) {
			tap_ok(false, "%s failed", cmd);
			continue;
		}
		char digest[MLFS_DIGEST_MAX];
		lg_digest_file(tar, digest);
		for (int cached = 0; cached < 2; cached++) {
			struct mlfs_layer *l = NULL;
			struct mlfs_err err;
			int rc = lg_open(cache, tar, digest, digest, &l, &err);
			tap_ok(rc == 0, "%s tar opened%s", format, cached ? " from the cache" : "");
			struct mlfs_entry e;
			find(l, "holes", &e);
			tap_ok(e.size == SPARSE_SIZE && e.stored > 0 && e.stored <= 8192,
			       "%s%s: a sparse file stores its data only (%llu of %llu bytes)", format,
			       cached ? ", cached" : "", (unsigned long long)e.stored, (unsigned long long)e.size);
			find(l, "dense", &e);
			tap_ok(e.size == 10 && e.stored == 10, "%s%s: a plain file stores all of it", format,
			       cached ? ", cached" : "");
			mlfs_layer_free(l);
		}
		/* A table of the previous version is rebuilt, never read as this one. */
		char index[8192];
		snprintf(index, sizeof index, "%s/index/sha256/%s", cache, digest + 7);
		FILE *fp = fopen(index, "r+b");
		struct stat st;
		bool patched = false;
		if (fp && fstat(fileno(fp), &st) == 0 && st.st_size > 72) {
			size_t n = (size_t)st.st_size;
			unsigned char *p = malloc(n);
			if (p && fread(p, 1, n, fp) == n) {
				p[8] = 2; /* version 2, little-endian */
				p[9] = p[10] = p[11] = 0;
				char sum[MLFS_DIGEST_MAX] = { 0 };
				mlfs_digest_buf(p, n - MLFS_DIGEST_MAX, sum);
				memcpy(p + n - MLFS_DIGEST_MAX, sum, MLFS_DIGEST_MAX);
				rewind(fp);
				patched = fwrite(p, 1, n, fp) == n;
			}
			free(p);
		}
		if (fp)
			fclose(fp);
		tap_ok(patched, "index rewritten as version 2");
		struct mlfs_layer *l = NULL;
		struct mlfs_err err;
		tap_is_int(lg_open(cache, tar, digest, digest, &l, &err), 0, "a version 2 index: opened");
		unsigned char v[12] = { 0 };
		fp = fopen(index, "rb");
		if (fp) {
			if (fread(v, 1, sizeof v, fp) != sizeof v)
				memset(v, 0, sizeof v);
			fclose(fp);
		}
		tap_ok(v[8] != 2, "a version 2 index: rebuilt (now version %u)", v[8]);
		mlfs_layer_free(l);
	}
}

int main(void)
{
	char *d = lg_tmpdir();
	dir = d;
	char cache[4200];
	snprintf(cache, sizeof cache, "%s/cache", dir);
	symlink_modes();
	misread_sizes();
	endings();
	xattrs(cache);
	stored_bytes(cache);
	lg_rmrf(d);
	free(d);
	return tap_done();
}
