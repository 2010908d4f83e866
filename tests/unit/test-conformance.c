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
	const char *size_field; /* the 12 bytes at offset 124 as written; NULL: octal of size */
	const char *uid_field;  /* the 8 bytes at offset 108 as written */
	const char *mode_field; /* the 8 bytes at offset 100 as written (over mode) */
	bool nul_sum;           /* checksum written as NUL, six digits, space */
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
	if (h->uid_field)
		memcpy(x + 108, h->uid_field, 8);
	if (h->mode_field)
		memcpy(x + 100, h->mode_field, 8);
	char f[13];
	snprintf(f, sizeof f, "%011zo", h->size);
	memcpy(x + 124, h->size_field ? h->size_field : f, 12);
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
	if (h->nul_sum) {
		x[148] = 0;
		memcpy(x + 149, f, 6); /* NUL, six digits, and the space already there */
	} else
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

/* A PAX extended header of one "comment" record `total` bytes long. */
static void pax_sized(struct buf *b, size_t total)
{
	char *rec = malloc(total + 1);
	if (!rec)
		abort();
	int n = snprintf(rec, total + 1, "%zu comment=", total);
	memset(rec + n, 'v', total - (size_t)n - 1);
	rec[total - 1] = '\n';
	header(b, &(struct hdr){ .name = "PaxHeaders/x", .type = 'x', .size = total });
	put(b, rec, total);
	zeros(b, (512 - total % 512) % 512);
	free(rec);
}

/* A GNU long name of len bytes (its NUL included). */
static void longname_sized(struct buf *b, size_t len)
{
	char *name = malloc(len);
	if (!name)
		abort();
	memset(name, 'n', len - 1);
	name[len - 1] = '\0';
	header(b, &(struct hdr){ .name = "././@LongLink", .type = 'L', .size = len });
	put(b, name, len);
	zeros(b, (512 - len % 512) % 512);
	free(name);
}

static void longname(struct buf *b, const char *name)
{
	header(b, &(struct hdr){ .name = "././@LongLink", .type = 'L', .size = strlen(name) + 1 });
	put(b, name, strlen(name) + 1);
	zeros(b, 512 - strlen(name) - 1);
}

static const char *dir;
static char last_err[1024]; /* open_buf's error message */

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
	snprintf(last_err, sizeof last_err, "%s", rc < 0 ? err.msg : "");
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

/* Numeric fields padded with leading NULs (or NULs and spaces): Go's
 * parseOctal trims both from both ends, libarchive's tar_atol stops at the
 * first NUL (a size of 0, and the data then parsed as headers). */
static void nul_padded_numbers(void)
{
	static const char hello[] = "hello, world!\n";
	char big[2001];
	for (size_t i = 0; i < sizeof big - 1; i++)
		big[i] = (char)('a' + i % 26);
	big[sizeof big - 1] = '\0';
	static const struct {
		const char *what;
		struct hdr h;
		bool big;
		const char *pax_size;  /* a PAX header first, its size field as written */
		unsigned uid, mode;
		int want;
		const char *msg; /* the error says this */
	} cases[] = {
		{ .what = "size: 9 NULs, \"16\", NUL",
		  .h = { .name = "hello.txt", .size_field = "\0\0\0\0\0\0\0\0\0" "16" "\0" } },
		{ .what = "size: spaces and NULs around the digits",
		  .h = { .name = "hello.txt", .size_field = " \0 \0" "0000016" " " } },
		{ .what = "size: leading NULs, 2000 bytes of data",
		  .h = { .name = "hello.txt", .size_field = "\0\0\0\0\0\0\0" "3720" "\0" }, .big = true },
		{ .what = "GNU header, size with leading NULs",
		  .h = { .name = "hello.txt", .gnu = true, .size_field = "\0\0\0\0\0\0\0\0\0" "16" "\0" } },
		{ .what = "uid with leading NULs",
		  .h = { .name = "hello.txt", .uid_field = "\0\0\0" "1750" "\0" }, .uid = 1000 },
		{ .what = "mode with leading NULs",
		  .h = { .name = "hello.txt", .mode_field = "\0\0\0" "0755" "\0" }, .mode = 0755 },
		{ .what = "checksum with a leading NUL",
		  .h = { .name = "hello.txt", .nul_sum = true } },
		{ .what = "a PAX header whose size has leading NULs",
		  .h = { .name = "hello.txt" }, .pax_size = "\0\0\0\0\0\0\0\0\0" "26" "\0" },
		/* Go's ParseUint fails on the 'x': ErrHeader, and libarchive
		 * reads a size of 0, then the data as a damaged header. */
		{ .what = "size: leading NULs, then \"16x\" (Go fails too)",
		  .h = { .name = "hello.txt", .size_field = "\0\0\0\0\0\0\0\0" "16x" "\0" },
		  .want = -EBADMSG, .msg = "size field" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct buf b = { 0 };
		file(&b, (struct hdr){ .name = "first.txt" }, "first", true);
		if (cases[i].pax_size) {
			static const char rec[] = "22 mtime=1700000000.5\n"; /* 22 bytes: 026 */
			header(&b, &(struct hdr){ .name = "PaxHeaders/x", .type = 'x', .size = 22,
						  .size_field = cases[i].pax_size });
			put(&b, rec, strlen(rec));
			zeros(&b, 512 - strlen(rec));
		}
		const char *data = cases[i].big ? big : hello;
		file(&b, cases[i].h, data, true);
		file(&b, (struct hdr){ .name = "after.txt" }, "abc", true);
		zeros(&b, 1024);
		struct mlfs_layer *l;
		int rc = open_buf(&b, &l);
		tap_is_int(rc, cases[i].want, cases[i].what);
		if (rc == 0) {
			tap_ok(mlfs_layer_count(l) == 3 && content_is(l, "first.txt", "first") &&
			       content_is(l, "hello.txt", data) && content_is(l, "after.txt", "abc"),
			       "  read as Go reads it: three files, whole");
			struct mlfs_entry e;
			find(l, "hello.txt", &e);
			if (cases[i].uid)
				tap_is_int(e.uid, cases[i].uid, "  its uid");
			if (cases[i].mode)
				tap_is_int(e.mode, S_IFREG | cases[i].mode, "  its mode");
			if (cases[i].pax_size)
				tap_is_int(e.mtime_nsec, 500000000, "  the PAX record applied");
		}
		if (cases[i].msg)
			tap_ok(strstr(last_err, cases[i].msg) && !strstr(last_err, "INTERNAL"),
			       "  one line that says why: %s", last_err);
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

/* Meta headers at the end longer than any window a reader might keep of
 * the stream's recent bytes, up to Go's limit of 1 MiB for one header. */
static void long_endings(void)
{
	static const char hello[] = "hello, world!\n";
	enum tail { BIG_PAX_EOF, BIG_PAX_Z2, CHAIN_EOF, MIB_PAX_EOF, OVER_MIB_PAX_EOF, OVER_MIB_LONG_Z2,
		    PAX_CUT_PAD, BAD_RECORDS_EOF };
	static const struct {
		enum tail tail;
		const char *what;
		int want;
		const char *msg; /* the error says this */
	} cases[] = {
		{ BIG_PAX_EOF, "a 100 KiB PAX header last, then the stream ends", 0, NULL },
		{ BIG_PAX_Z2, "a 100 KiB PAX header last, then the end-of-archive blocks", 0, NULL },
		{ CHAIN_EOF, "three 30 KiB PAX headers and a 30 KiB long name last, then the stream ends", 0, NULL },
		{ MIB_PAX_EOF, "a PAX header of exactly 1 MiB last, then the stream ends", 0, NULL },
		{ OVER_MIB_PAX_EOF, "a PAX header of 1 MiB + 1 last (Go: ErrFieldTooLong)", -EBADMSG, "1 MiB" },
		{ OVER_MIB_LONG_Z2, "a long name of 1 MiB + 1 last (Go: ErrFieldTooLong)", -EBADMSG, "1 MiB" },
		{ PAX_CUT_PAD, "a PAX header last, the padding of its records cut short", 0, NULL },
		{ BAD_RECORDS_EOF, "a PAX header last whose records Go cannot parse", -EBADMSG, "records" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct buf b = { 0 };
		enum tail t = cases[i].tail;
		file(&b, (struct hdr){ .name = "first.txt" }, "first", true);
		file(&b, (struct hdr){ .name = "hello.txt" }, hello, true);
		switch (t) {
		case BIG_PAX_EOF: case BIG_PAX_Z2: pax_sized(&b, 100 << 10); break;
		case CHAIN_EOF:
			for (int k = 0; k < 3; k++)
				pax_sized(&b, 30 << 10);
			longname_sized(&b, 30 << 10);
			break;
		case MIB_PAX_EOF: pax_sized(&b, 1 << 20); break;
		case OVER_MIB_PAX_EOF: pax_sized(&b, (1 << 20) + 1); break;
		case OVER_MIB_LONG_Z2: longname_sized(&b, (1 << 20) + 1); break;
		case PAX_CUT_PAD: pax(&b, "path", "nothing/follows"); b.len -= 100; break;
		case BAD_RECORDS_EOF: pax(&b, "path", "nothing/follows"); b.p[b.len - 512] = 'x'; break;
		}
		if (t == BIG_PAX_Z2 || t == OVER_MIB_LONG_Z2)
			zeros(&b, 1024);
		struct mlfs_layer *l;
		int rc = open_buf(&b, &l);
		tap_is_int(rc, cases[i].want, cases[i].what);
		if (rc == 0) {
			tap_is_int(mlfs_layer_count(l), 2, "  both files indexed");
			tap_ok(content_is(l, "first.txt", "first") && content_is(l, "hello.txt", hello),
			       "  and read back whole");
		}
		if (cases[i].msg)
			tap_ok(strstr(last_err, cases[i].msg) && !strchr(last_err, '\n'),
			       "  one line that says why: %s", last_err);
		mlfs_layer_free(l);
		free(b.p);
	}
}

/* The walk that finds such headers follows every entry before them as Go
 * does: GNU tar's sparse files, old GNU format (extension blocks after the
 * header when a file has more than four data regions) and PAX 1.0 (a map
 * ahead of the data).  GNU tar writes the next file, whose size field is
 * then rewritten with leading NULs. */
static void nul_padded_after_sparse(void)
{
	static const char hello[] = "hello, world!\n";
	char src[4200], f[4300], tar[4200], cmd[16384];
	snprintf(src, sizeof src, "%s/sparse-many", dir);
	mkdir(src, 0755);
	snprintf(f, sizeof f, "%s/holes", src);
	int fd = open(f, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	for (int i = 0; fd >= 0 && i < 12; i++)
		if (pwrite(fd, "D", 1, (off_t)i * 100000) != 1)
			abort();
	if (fd < 0 || ftruncate(fd, 1300000) < 0)
		abort();
	close(fd);
	snprintf(f, sizeof f, "%s/odd.txt", src);
	lg_write_bytes(f, hello, strlen(hello));
	for (int pass = 0; pass < 2; pass++) {
		const char *format = pass ? "posix" : "gnu";
		snprintf(tar, sizeof tar, "%s/many-%s.tar", dir, format);
		snprintf(cmd, sizeof cmd, "tar --sparse --format=%s -C '%s' -cf '%s' holes odd.txt", format, src,
			 tar);
		struct buf b = { 0 };
		FILE *fp = system(cmd) == 0 ? fopen(tar, "rb") : NULL;
		char chunk[4096];
		size_t n;
		while (fp && (n = fread(chunk, 1, sizeof chunk, fp)) > 0)
			put(&b, chunk, n);
		if (fp)
			fclose(fp);
		bool patched = false;
		for (size_t o = 512; !patched && o + 512 <= b.len; o += 512) {
			unsigned char *h = b.p + o;
			if (memcmp(h, "odd.txt", 8) || h[156] != '0')
				continue;
			memcpy(h + 124, "\0\0\0\0\0\0\0\0\0" "16" "\0", 12);
			memset(h + 148, ' ', 8);
			unsigned sum = 0;
			for (size_t i = 0; i < 512; i++)
				sum += h[i];
			char c[8];
			snprintf(c, sizeof c, "%06o", sum & 0777777);
			memcpy(h + 148, c, 7);
			patched = true;
		}
		tap_ok(patched && (pass || b.p[156] == 'S'), "%s sparse tar made, the next size rewritten", format);
		struct mlfs_layer *l;
		int rc = open_buf(&b, &l);
		struct mlfs_entry e;
		find(l, "holes", &e);
		tap_ok(rc == 0 && e.size == 1300000 && content_is(l, "odd.txt", hello),
		       "after a %s sparse file: the entry with leading NULs read whole", format);
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
	nul_padded_numbers();
	nul_padded_after_sparse();
	endings();
	long_endings();
	xattrs(cache);
	stored_bytes(cache);
	lg_rmrf(d);
	free(d);
	return tap_done();
}
