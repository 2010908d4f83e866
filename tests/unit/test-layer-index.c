/* layers/: reading one layer — formats, entry table, refusals, digests. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "layergen.h"
#include "tap.h"

static const unsigned char cap[20] = { 1, 0, 0, 2, 0x20, 0, 0, 0 }; /* cap_net_raw, binary */

static const struct lg_entry basic[] = {
	{ .path = "./", .type = 'd', .mode = 0755 },
	{ .path = "./etc/", .type = 'd', .mode = 0750, .uid = 1000, .gid = 1001 },
	{ .path = "./etc/passwd", .data = "root:x:0:0::/root:/bin/sh\n", .mtime = 1234567890, .nsec = 123456789 },
	{ .path = "/usr//bin/./su", .mode = 04755, .data = "su binary" },
	{ .path = "tmp", .type = 'd', .mode = 01777 },
	{ .path = "usr/bin/sg", .mode = 02711, .data = "sg" },
	{ .path = "usr/bin/sh", .type = 'l', .link = "../../bin/busybox" },
	{ .path = "usr/bin/newgrp", .type = 'h', .link = "./usr/bin/sg" },
	{ .path = "dev/null", .type = 'c', .mode = 0666, .major = 1, .minor = 3 },
	{ .path = "dev/sda", .type = 'b', .mode = 0660, .major = 8, .minor = 0 },
	{ .path = "run/fifo", .type = 'p', .mode = 0600 },
	{ .path = "bin/ping", .mode = 0755, .data = "ping", .xname = "security.capability", .xval = cap, .xlen = sizeof cap },
	{ .path = "big", .uid = 70000, .gid = 4294967294L, .mtime = -5 },
};

static const struct mlfs_entry *find(struct mlfs_layer *l, const char *path, struct mlfs_entry *e)
{
	for (size_t i = mlfs_layer_count(l); i-- > 0;) {
		mlfs_layer_entry(l, i, e);
		if (!strcmp(e->path, path))
			return e;
	}
	return NULL;
}

static size_t index_of(struct mlfs_layer *l, const char *path)
{
	struct mlfs_entry e;
	for (size_t i = 0; i < mlfs_layer_count(l); i++) {
		mlfs_layer_entry(l, i, &e);
		if (!strcmp(e.path, path))
			return i;
	}
	return SIZE_MAX;
}

static void check_basic(struct mlfs_layer *l, const char *what)
{
	struct mlfs_entry e;
	tap_is_int(mlfs_layer_count(l), 13, "entries counted");
	tap_ok(find(l, "", &e) && e.kind == MLFS_ENTRY_DIR, "%s: ./ is the root", what);
	tap_ok(find(l, "etc", &e) && e.mode == (S_IFDIR | 0750) && e.uid == 1000 && e.gid == 1001,
	       "%s: dir mode, uid, gid", what);
	tap_ok(find(l, "etc/passwd", &e) && e.kind == MLFS_ENTRY_REG && e.size == 26 &&
	       e.mtime_sec == 1234567890 && e.mtime_nsec == 123456789, "%s: file size, mtime ns", what);
	tap_ok(find(l, "usr/bin/su", &e) && e.mode == (S_IFREG | 04755), "%s: path normalised, setuid kept", what);
	tap_ok(find(l, "tmp", &e) && e.mode == (S_IFDIR | 01777), "%s: sticky kept", what);
	tap_ok(find(l, "usr/bin/sg", &e) && e.mode == (S_IFREG | 02711), "%s: setgid kept", what);
	tap_ok(find(l, "usr/bin/sh", &e) && e.kind == MLFS_ENTRY_SYMLINK && e.link &&
	       !strcmp(e.link, "../../bin/busybox"), "%s: symlink target kept verbatim", what);
	tap_ok(find(l, "usr/bin/newgrp", &e) && e.kind == MLFS_ENTRY_HARDLINK && e.link &&
	       !strcmp(e.link, "usr/bin/sg"), "%s: hardlink target normalised", what);
	tap_ok(find(l, "dev/null", &e) && e.kind == MLFS_ENTRY_CHR && e.rdev == makedev(1, 3),
	       "%s: char device rdev", what);
	tap_ok(find(l, "dev/sda", &e) && e.kind == MLFS_ENTRY_BLK && e.rdev == makedev(8, 0),
	       "%s: block device rdev", what);
	tap_ok(find(l, "run/fifo", &e) && e.kind == MLFS_ENTRY_FIFO && S_ISFIFO(e.mode), "%s: fifo", what);
	tap_ok(find(l, "big", &e) && e.uid == 70000 && e.gid == 4294967294u - 0 + 0 && e.mtime_sec == -5,
	       "%s: large ids, negative mtime", what);
	size_t i = index_of(l, "bin/ping");
	tap_ok(i != SIZE_MAX, "%s: ping indexed", what);
	if (i != SIZE_MAX) {
		mlfs_layer_entry(l, i, &e);
		const char *name = NULL;
		const void *val = NULL;
		size_t len = 0;
		if (e.n_xattrs == 1)
			mlfs_layer_xattr(l, i, 0, &name, &val, &len);
		tap_ok(e.n_xattrs == 1 && name && !strcmp(name, "security.capability") &&
		       len == sizeof cap && !memcmp(val, cap, len), "%s: security.capability xattr", what);
	}
	char buf[64] = { 0 };
	i = index_of(l, "etc/passwd");
	tap_is_int(mlfs_layer_pread(l, i, buf, sizeof buf, 0), 26, "pread whole file");
	tap_is_str(buf, "root:x:0:0::/root:/bin/sh\n", "file bytes from the data file");
	memset(buf, 0, sizeof buf);
	tap_is_int(mlfs_layer_pread(l, i, buf, 4, 5), 4, "pread in the middle");
	tap_is_str(buf, "x:0:", "bytes at an offset");
	tap_is_int(mlfs_layer_pread(l, i, buf, 4, 26), 0, "pread at EOF");
	memset(buf, 0, sizeof buf);
	mlfs_layer_pread(l, index_of(l, "usr/bin/su"), buf, sizeof buf, 0);
	tap_is_str(buf, "su binary", "second file's bytes");
}

int main(void)
{
	char *dir = lg_tmpdir();
	char cache[4096], file[4096], plain[4096];
	snprintf(cache, sizeof cache, "%s/cache", dir);
	snprintf(plain, sizeof plain, "%s/plain.tar", dir);
	struct mlfs_err err = { 0 };
	struct mlfs_layer *l = NULL;
	char diff_id[MLFS_DIGEST_MAX], blob[MLFS_DIGEST_MAX];

	lg_write(plain, 'n', basic, sizeof basic / sizeof basic[0]);
	lg_digest_file(plain, diff_id);

	/* The same tar in three compressions, sniffed from the bytes. */
	const char filters[] = { 'n', 'g', 'z' };
	const char *names[] = { "plain", "gzip", "zstd" };
	for (int f = 0; f < 3; f++) {
		snprintf(file, sizeof file, "%s/l.%s", dir, names[f]);
		lg_write(file, filters[f], basic, sizeof basic / sizeof basic[0]);
		lg_digest_file(file, blob);
		lg_rmrf(cache);
		int rc = lg_open(cache, file, diff_id, blob, &l, &err);
		tap_is_int(rc, 0, names[f]);
		if (rc < 0) {
			tap_diag("%s", err.msg);
			continue;
		}
		check_basic(l, names[f]);
		mlfs_layer_free(l);
		tap_is_int(lg_count_files(cache, "data/sha256"), 1, "data file in the cache");
		tap_is_int(lg_count_files(cache, "index/sha256"), 1, "index file in the cache");
	}

	/* Unverified layers are indexed into an unnamed file and not kept. */
	lg_rmrf(cache);
	snprintf(file, sizeof file, "%s/l.gzip", dir);
	tap_is_int(lg_open(cache, file, NULL, NULL, &l, &err), 0, "open without digests");
	mlfs_layer_free(l);
	tap_is_int(lg_count_files(cache, "data/sha256") + lg_count_files(cache, "index/sha256"), 0,
		   "nothing persisted without digests");

	/* ".." is refused, never followed; the rest of the layer stays. */
	static const struct lg_entry dotdot[] = {
		{ .path = "../evil", .data = "x" },
		{ .path = "a/../../b", .data = "x" },
		{ .path = "ok/..", .type = 'd' },
		{ .path = "ok", .data = "fine" },
		{ .path = "hl", .type = 'h', .link = "../etc/shadow" },
		{ .path = "sl", .type = 'l', .link = "../../etc/shadow" },
		{ .path = "d/.wh..", .data = "" },
		{ .path = "d/.wh.", .data = "" },
	};
	snprintf(file, sizeof file, "%s/dotdot.tar", dir);
	lg_write(file, 'n', dotdot, sizeof dotdot / sizeof dotdot[0]);
	tap_is_int(lg_open(cache, file, NULL, NULL, &l, &err), 0, "layer with .. opens");
	if (l) {
		struct mlfs_entry e;
		tap_is_int(mlfs_layer_count(l), 2, "only the good entries indexed");
		tap_is_int(mlfs_layer_refused(l), 6, ".. paths, .. hardlink, bad whiteouts refused");
		tap_ok(find(l, "ok", &e) != NULL, "good entry kept");
		tap_ok(find(l, "sl", &e) && !strcmp(e.link, "../../etc/shadow"),
		       "symlink target is data, not followed");
		mlfs_layer_free(l);
		l = NULL;
	}

	/* Whiteouts are classified once, by the indexer. */
	static const struct lg_entry wh[] = {
		{ .path = "a/.wh.b", .data = "" },
		{ .path = "a/.wh..wh..opq", .data = "" },
		{ .path = ".wh..wh..opq", .data = "" },
		{ .path = ".wh..wh.plnk", .type = 'd' },
		{ .path = ".wh.top", .data = "" },
	};
	snprintf(file, sizeof file, "%s/wh.tar", dir);
	lg_write(file, 'n', wh, sizeof wh / sizeof wh[0]);
	tap_is_int(lg_open(cache, file, NULL, NULL, &l, &err), 0, "whiteout layer opens");
	if (l) {
		struct mlfs_entry e;
		tap_is_int(mlfs_layer_count(l), 4, "AUFS metadata ignored");
		mlfs_layer_entry(l, 0, &e);
		tap_ok(e.kind == MLFS_ENTRY_WHITEOUT && !strcmp(e.path, "a/b"), "whiteout names its target");
		mlfs_layer_entry(l, 1, &e);
		tap_ok(e.kind == MLFS_ENTRY_OPAQUE && !strcmp(e.path, "a"), "opaque names its directory");
		mlfs_layer_entry(l, 2, &e);
		tap_ok(e.kind == MLFS_ENTRY_OPAQUE && !strcmp(e.path, ""), "opaque root");
		mlfs_layer_entry(l, 3, &e);
		tap_ok(e.kind == MLFS_ENTRY_WHITEOUT && !strcmp(e.path, "top"), "whiteout at the top");
		mlfs_layer_free(l);
		l = NULL;
	}

	/* Broken streams fail and leave nothing in the cache. */
	enum { BIG = 300000 };
	char *noise = malloc(BIG + 1);
	unsigned s = 12345;
	for (size_t i = 0; i < BIG; i++) {
		s = s * 1103515245u + 12345u;
		noise[i] = (char)('a' + (s >> 16) % 26);
	}
	noise[BIG] = 0;
	const struct lg_entry bigl[] = { { .path = "noise", .data = noise }, { .path = "after", .data = "x" } };
	for (int f = 1; f < 3; f++) {
		snprintf(file, sizeof file, "%s/big.%s", dir, names[f]);
		lg_write(file, filters[f], bigl, 2);
		lg_digest_file(file, blob);
		lg_truncate(file, 0.5);
		lg_rmrf(cache);
		int rc = lg_open(cache, file, NULL, blob, &l, &err);
		tap_ok(rc == -EBADMSG, "truncated %s refused (%d: %s)", names[f], rc, err.msg);
		tap_is_int(lg_count_files(cache, "data/sha256") + lg_count_files(cache, "index/sha256"), 0,
			   "nothing cached from a truncated layer");
		rc = lg_open(cache, file, NULL, NULL, &l, &err);
		tap_ok(rc == -EBADMSG, "truncated %s refused even unverified (%d: %s)", names[f], rc, err.msg);
		/* Cut inside the compressed trailer: all entries are there, only the stream is short. */
		lg_write(file, filters[f], bigl, 2);
		struct stat st;
		stat(file, &st);
		truncate(file, st.st_size - 3);
		rc = lg_open(cache, file, NULL, NULL, &l, &err);
		tap_ok(rc == -EBADMSG, "%s missing its last bytes refused (%d: %s)", names[f], rc, err.msg);
	}
	free(noise);

	snprintf(file, sizeof file, "%s/random", dir);
	unsigned char rnd[4096];
	for (size_t i = 0; i < sizeof rnd; i++) {
		s = s * 1103515245u + 12345u;
		rnd[i] = (unsigned char)(s >> 16);
	}
	lg_write_bytes(file, rnd, sizeof rnd);
	tap_is_int(lg_open(cache, file, NULL, NULL, &l, &err), -EBADMSG, "random bytes refused");
	lg_write_bytes(file, "", 0);
	tap_is_int(lg_open(cache, file, NULL, NULL, &l, &err), -EBADMSG, "empty blob refused");
	rnd[0] = 0x1f, rnd[1] = 0x8b, rnd[2] = 8, rnd[3] = 0;
	lg_write_bytes(file, rnd, sizeof rnd);
	tap_is_int(lg_open(cache, file, NULL, NULL, &l, &err), -EBADMSG, "gzip magic then garbage refused");

	/* A ustar header that claims 8 GiB, followed by a few bytes. */
	unsigned char hdr[512 + 100] = { 0 };
	strcpy((char *)hdr, "huge");
	memcpy(hdr + 100, "0000644", 8);
	memcpy(hdr + 108, "0000000", 8);
	memcpy(hdr + 116, "0000000", 8);
	memcpy(hdr + 124, "77777777777", 12);
	memcpy(hdr + 136, "00000000000", 12);
	hdr[156] = '0';
	memcpy(hdr + 257, "ustar", 6);
	memcpy(hdr + 263, "00", 2);
	memset(hdr + 148, ' ', 8);
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += hdr[i];
	snprintf((char *)hdr + 148, 8, "%06o", sum);
	lg_write_bytes(file, hdr, sizeof hdr);
	lg_rmrf(cache);
	tap_is_int(lg_open(cache, file, NULL, NULL, &l, &err), -EBADMSG, "header claiming 8 GiB refused");
	tap_is_int(lg_count_files(cache, "data/sha256"), 0, "no data file left behind");

	/* Digest mismatches leave nothing in the cache. */
	snprintf(file, sizeof file, "%s/l.gzip", dir);
	lg_digest_file(file, blob);
	const char *wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
	lg_rmrf(cache);
	tap_is_int(lg_open(cache, file, wrong, blob, &l, &err), -EBADMSG, "diff_id mismatch refused");
	tap_ok(strstr(err.msg, "diff_id") != NULL, "message names the diff_id: %s", err.msg);
	tap_is_int(lg_count_files(cache, "data/sha256") + lg_count_files(cache, "index/sha256"), 0,
		   "nothing cached after a diff_id mismatch");
	tap_is_int(lg_open(cache, file, diff_id, wrong, &l, &err), -EBADMSG, "blob digest mismatch refused");
	tap_ok(strstr(err.msg, "digest") != NULL, "message names the digest: %s", err.msg);
	tap_is_int(lg_count_files(cache, "data/sha256") + lg_count_files(cache, "index/sha256"), 0,
		   "nothing cached after a blob digest mismatch");
	tap_is_int(lg_open(cache, file, "sha256:abc", NULL, &l, &err), -EINVAL, "malformed diff_id refused");

	/* A gzip inside a gzip is not a tar+gzip layer. */
	{
		struct archive *a = archive_write_new();
		struct archive_entry *e = archive_entry_new();
		archive_write_set_format_pax(a);
		archive_write_add_filter_gzip(a);
		archive_write_add_filter_gzip(a);
		snprintf(file, sizeof file, "%s/nested", dir);
		archive_write_open_filename(a, file);
		archive_entry_set_pathname(e, "x");
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_size(e, 0);
		archive_write_header(a, e);
		archive_write_close(a);
		archive_write_free(a);
		archive_entry_free(e);
		tap_is_int(lg_open(cache, file, NULL, NULL, &l, &err), -EBADMSG, "nested gzip refused");
	}

	lg_rmrf(dir);
	free(dir);
	return tap_done();
}
