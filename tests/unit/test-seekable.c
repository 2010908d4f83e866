/* Seekable layers against the slow path: each real blob (data/seekable/,
 * made by ctr-remote and skopeo) is opened from its TOC through a range
 * source over the file, and as a plain stream; the two entry tables and
 * every file's bytes must agree.  Then what the range source saw: the TOC
 * alone before any read, nothing again from the cache, and the failures
 * that must send a caller back to the stream (bad TOC digest, ranges
 * refused) or fail one read (a corrupt chunk) without caching it. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layers/layers.h"
#include "tap.h"

struct blobsrc {
	int fd;
	unsigned requests;
	uint64_t bytes;
	int64_t corrupt_at;  /* flip this blob byte in what is served; -1: none */
	bool refuse;         /* answer -ERANGE, as for a registry that ignores Range */
	unsigned distrusted; /* distrust() calls: each one stops the corruption (a mirror left out) */
	uint64_t last_off, last_len;
};

static int src_read(void *priv, uint64_t off, size_t len, void *buf, struct mlfs_err *err)
{
	struct blobsrc *s = priv;
	s->requests++;
	s->last_off = off;
	s->last_len = len;
	if (s->refuse)
		return mlfs_err_set(err, ERANGE, "ranges refused");
	if (pread(s->fd, buf, len, (off_t)off) != (ssize_t)len)
		return mlfs_err_set(err, EIO, "short read");
	s->bytes += len;
	if (s->corrupt_at >= 0 && (uint64_t)s->corrupt_at >= off && (uint64_t)s->corrupt_at < off + len)
		((unsigned char *)buf)[s->corrupt_at - (int64_t)off] ^= 0x40;
	return 0;
}

static bool src_distrust(void *priv)
{
	struct blobsrc *s = priv;
	s->distrusted++;
	bool changed = s->corrupt_at >= 0;
	s->corrupt_at = -1;
	return changed;
}

/* The whole blob, in odd-sized pieces, as a registry GET would stream it. */
static int src_stream(void *priv, int (*sink)(void *sp, const void *buf, size_t len), void *sink_priv,
		      struct mlfs_err *err)
{
	struct blobsrc *s = priv;
	unsigned char buf[7001];
	s->requests++;
	for (uint64_t off = 0;;) {
		ssize_t n = pread(s->fd, buf, sizeof buf, (off_t)off);
		if (n < 0)
			return mlfs_err_set(err, EIO, "read failed");
		if (n == 0)
			return 0;
		if (s->corrupt_at >= 0 && (uint64_t)s->corrupt_at >= off && (uint64_t)s->corrupt_at < off + (uint64_t)n)
			buf[s->corrupt_at - (int64_t)off] ^= 0x40;
		s->bytes += (uint64_t)n;
		int r = sink(sink_priv, buf, (size_t)n);
		if (r)
			return r;
		off += (uint64_t)n;
	}
}

struct fixture {
	const char *name;
	char blob[4096];
	json_t *desc;
	struct mlfs_seekable_desc sd;
};

static const char *ann(json_t *desc, const char *key)
{
	return json_string_value(json_object_get(json_object_get(desc, "annotations"), key));
}

static int load_fixture(struct fixture *f, const char *name)
{
	const char *dir = getenv("MLFS_TEST_SRCDIR");
	char path[4096];
	f->name = name;
	snprintf(f->blob, sizeof f->blob, "%s/data/seekable/%s.blob", dir ? dir : ".", name);
	snprintf(path, sizeof path, "%s/data/seekable/%s.json", dir ? dir : ".", name);
	f->desc = json_load_file(path, 0, NULL);
	if (!f->desc)
		return -1;
	const char *mt = json_string_value(json_object_get(f->desc, "mediaType"));
	f->sd = (struct mlfs_seekable_desc){
		.blob_digest = json_string_value(json_object_get(f->desc, "digest")),
		.blob_size = (uint64_t)json_integer_value(json_object_get(f->desc, "size")),
		.zstd = mt && strstr(mt, "zstd"),
		.toc_digest = ann(f->desc, "containerd.io/snapshot/stargz/toc.digest"),
		.zstd_toc_checksum = ann(f->desc, "io.containers.zstd-chunked.manifest-checksum"),
		.zstd_toc_position = ann(f->desc, "io.containers.zstd-chunked.manifest-position"),
	};
	return 0;
}

/* Opens f through a heap source that outlives the layer (release is NULL:
 * the test reads its counters, then frees it with close_src()). */
static int open_seek(const struct fixture *f, const struct mlfs_seekable_desc *sd, const char *cache,
		     const struct blobsrc *init, struct blobsrc **srcp, struct mlfs_layer **out, struct mlfs_err *err)
{
	struct mlfs_layer_opts o = { .cache_dir = cache };
	struct blobsrc *own = malloc(sizeof *own);
	*own = *init;
	own->fd = open(f->blob, O_RDONLY);
	struct mlfs_blob_ranges src = { src_read, own, NULL, src_stream, NULL };
	*srcp = own;
	return mlfs_layer_open_seekable(&o, sd, &src, out, err);
}

static void close_src(struct blobsrc *s)
{
	close(s->fd);
	free(s);
}

static size_t find(const struct mlfs_layer *l, const char *path)
{
	struct mlfs_entry e;
	for (size_t i = 0; i < mlfs_layer_count(l); i++) {
		mlfs_layer_entry(l, i, &e);
		if (!strcmp(e.path, path))
			return i;
	}
	return SIZE_MAX;
}

static bool same_entry(const struct mlfs_layer *a, size_t i, const struct mlfs_layer *b, size_t j)
{
	struct mlfs_entry x, y;
	mlfs_layer_entry(a, i, &x);
	mlfs_layer_entry(b, j, &y);
	bool ok = !strcmp(x.path, y.path) && x.kind == y.kind && x.mode == y.mode && x.uid == y.uid &&
		  x.gid == y.gid && x.mtime_sec == y.mtime_sec && x.size == y.size && x.rdev == y.rdev &&
		  !x.link == !y.link && (!x.link || !strcmp(x.link, y.link)) && x.n_xattrs == y.n_xattrs;
	for (uint32_t k = 0; ok && k < x.n_xattrs; k++) {
		const char *n1, *n2;
		const void *v1, *v2;
		size_t l1, l2;
		mlfs_layer_xattr(a, i, k, &n1, &v1, &l1);
		mlfs_layer_xattr(b, j, k, &n2, &v2, &l2);
		ok = !strcmp(n1, n2) && l1 == l2 && !memcmp(v1, v2, l1);
	}
	if (!ok)
		tap_diag("%s differs from the stream's %s", x.path, y.path);
	return ok;
}

static bool same_bytes(const struct mlfs_layer *a, size_t i, const struct mlfs_layer *b, size_t j)
{
	struct mlfs_entry e;
	mlfs_layer_entry(a, i, &e);
	if (e.kind != MLFS_ENTRY_REG)
		return true;
	char *x = malloc(e.size + 1), *y = malloc(e.size + 1);
	ssize_t n1 = mlfs_layer_pread(a, i, x, e.size, 0), n2 = mlfs_layer_pread(b, j, y, e.size, 0);
	bool ok = n1 == (ssize_t)e.size && n2 == n1 && !memcmp(x, y, e.size);
	if (!ok)
		tap_diag("%s: bytes differ (%zd / %zd of %llu)", e.path, n1, n2, (unsigned long long)e.size);
	free(x);
	free(y);
	return ok;
}

static const struct blobsrc plain = { .corrupt_at = -1 };

/* A fresh cache dir under tmp. */
static char *cache_dir(const char *tmp, const char *name, const char *what)
{
	char *p = NULL;
	if (asprintf(&p, "%s/%s-%s", tmp, name, what) < 0)
		abort();
	mkdir(p, 0755);
	return p;
}

static void check_fixture(const char *name, const char *tmp)
{
	struct fixture f;
	if (load_fixture(&f, name) < 0) {
		tap_ok(false, "%s: fixture loads", name);
		return;
	}
	char *cache = cache_dir(tmp, name, "cache"), *scache = cache_dir(tmp, name, "stream");
	struct blobsrc *s;
	struct mlfs_layer *toc = NULL, *stream = NULL;
	struct mlfs_err err = { 0 };
	int r = open_seek(&f, &f.sd, cache, &plain, &s, &toc, &err);
	tap_is_int(r, 0, "opens from its TOC");
	if (r < 0)
		tap_diag("%s: %s", name, err.msg);
	/* eStargz: footer + TOC; zstd:chunked with its position annotation: the TOC. */
	tap_is_int(s->requests, f.sd.zstd_toc_position ? 1 : 2, "only the TOC fetched to index");
	tap_ok(s->bytes < f.sd.blob_size / 2, "%s: %llu of %llu bytes to index", name,
	       (unsigned long long)s->bytes, (unsigned long long)f.sd.blob_size);

	int fd = open(f.blob, O_RDONLY);
	struct mlfs_layer_opts so = { .cache_dir = scache, .estargz = f.sd.toc_digest != NULL };
	int r2 = mlfs_layer_open_fd(fd, &so, &stream, &err);
	close(fd);
	tap_is_int(r2, 0, "the same blob streams");
	if (r < 0 || r2 < 0) {
		tap_diag("%s", err.msg);
		goto out;
	}
	tap_ok(mlfs_layer_is_seekable(toc) && !mlfs_layer_is_seekable(stream), "%s: seekable, stream not", name);
	tap_is_int(mlfs_layer_count(toc), mlfs_layer_count(stream), "same entry count as the stream");
	bool entries = mlfs_layer_count(toc) == mlfs_layer_count(stream), bytes = true;
	for (size_t i = 0; entries && i < mlfs_layer_count(toc); i++)
		entries = same_entry(toc, i, stream, i);
	tap_ok(entries, "%s: every entry as the stream reader makes it", name);
	tap_ok(find(toc, "stargz.index.json") == SIZE_MAX && find(toc, ".no.prefetch.landmark") == SIZE_MAX &&
	       find(stream, "stargz.index.json") == SIZE_MAX && find(stream, ".no.prefetch.landmark") == SIZE_MAX,
	       "%s: format entries hidden on both paths", name);
	for (size_t i = 0; entries && i < mlfs_layer_count(toc); i++)
		bytes &= same_bytes(toc, i, stream, i);
	tap_ok(entries && bytes, "%s: every file's bytes as the stream's", name);
	struct mlfs_layer_stats st;
	mlfs_layer_stats(toc, &st);
	tap_ok(st.chunks > 2 && st.chunks_present == st.chunks, "%s: all %llu chunks present after reading", name,
	       (unsigned long long)st.chunks);
	mlfs_layer_free(toc);
	toc = NULL;
	close_src(s);
	s = NULL;

	/* From the cache: no request for the index or the bytes. */
	struct blobsrc *s2;
	struct mlfs_layer *again = NULL;
	r = open_seek(&f, &f.sd, cache, &plain, &s2, &again, &err);
	tap_is_int(r, 0, "reopens from the cache");
	if (r == 0) {
		bytes = true;
		for (size_t i = 0; i < mlfs_layer_count(again); i++)
			bytes &= same_bytes(again, i, stream, i);
		tap_ok(bytes && s2->requests == 0, "%s: cached index and chunks, %u requests", name, s2->requests);
		mlfs_layer_free(again);
	}
	close_src(s2);

	/* The data file lost (a cleanup by hand): its chunk map must not
	 * outlive it, or a new, empty data file would read as zeros. */
	char data[4400];
	snprintf(data, sizeof data, "%s/data/sha256/%s", cache, f.sd.blob_digest + 7);
	tap_is_int(unlink(data), 0, "data file removed");
	r = open_seek(&f, &f.sd, cache, &plain, &s2, &again, &err);
	tap_is_int(r, 0, "reopens without its data file");
	if (r == 0) {
		bytes = true;
		for (size_t i = 0; i < mlfs_layer_count(again); i++)
			bytes &= same_bytes(again, i, stream, i);
		tap_ok(bytes && s2->requests > 0, "%s: chunks fetched again (%u requests), right bytes", name,
		       s2->requests);
		mlfs_layer_free(again);
	}
	close_src(s2);

	/* Which blob bytes hold big/text: the ones its read fetches. */
	char *c3 = cache_dir(tmp, name, "probe"), *c4 = cache_dir(tmp, name, "corrupt");
	struct blobsrc *s3, *s4;
	struct mlfs_layer *probe = NULL, *bad = NULL;
	char buf[64];
	r = open_seek(&f, &f.sd, c3, &plain, &s3, &probe, &err);
	size_t text = r == 0 ? find(probe, "big/text") : SIZE_MAX, host = r == 0 ? find(probe, "etc/hostname") : SIZE_MAX;
	tap_ok(text != SIZE_MAX && host != SIZE_MAX, "%s: big/text and etc/hostname listed", name);
	uint64_t before = s3->bytes;
	unsigned reqs = s3->requests;
	if (text != SIZE_MAX)
		mlfs_layer_pread(probe, text, buf, sizeof buf, 0);
	tap_is_int(s3->requests, reqs + 1, "one request for the first bytes of big/text");
	uint64_t span = s3->bytes - before;
	tap_ok(span > 0 && span < f.sd.blob_size - before, "%s: %llu bytes for big/text's first chunk", name,
	       (unsigned long long)span);
	/* A source that flips the middle byte of that span. */
	struct blobsrc corrupt = plain;
	corrupt.corrupt_at = (int64_t)(s3->last_off + s3->last_len / 2);
	mlfs_layer_free(probe);
	close_src(s3);
	r = open_seek(&f, &f.sd, c4, &corrupt, &s4, &bad, &err);
	if (r == 0 && text != SIZE_MAX) {
		struct mlfs_err rerr = { 0 };
		r2 = mlfs_layer_fetch(bad, text, 0, sizeof buf, &rerr);
		tap_ok(r2 == -EBADMSG && strstr(rerr.msg, "corrupt") != NULL, "%s: a corrupt chunk fails its read (%s)",
		       name, rerr.msg);
		struct mlfs_layer_stats bs;
		mlfs_layer_stats(bad, &bs);
		tap_is_int(bs.chunks_present, 0, "nothing cached for it");
		tap_is_int(mlfs_layer_pread(bad, host, buf, sizeof buf, 0), 10, "another file still reads");
		tap_ok(!memcmp(buf, "mlfs-unit\n", 10), "%s: with the right bytes", name);
		mlfs_layer_free(bad);
	}
	close_src(s4);

	/* The same corrupt source that can ask elsewhere (a mirror distrusted):
	 * the read succeeds with the second answer, which is what is cached. */
	char *c6 = cache_dir(tmp, name, "distrust");
	struct blobsrc *s6 = malloc(sizeof *s6);
	*s6 = corrupt;
	s6->fd = open(f.blob, O_RDONLY);
	struct mlfs_blob_ranges dsrc = { src_read, s6, NULL, src_stream, src_distrust };
	struct mlfs_layer_opts o6 = { .cache_dir = c6 };
	struct mlfs_layer *l6 = NULL;
	r = mlfs_layer_open_seekable(&o6, &f.sd, &dsrc, &l6, &err);
	if (r == 0 && text != SIZE_MAX) {
		unsigned reqs6 = s6->requests;
		struct mlfs_err rerr = { 0 };
		r2 = mlfs_layer_fetch(l6, text, 0, sizeof buf, &rerr);
		tap_ok(r2 == 0 && s6->distrusted == 1 && s6->requests == reqs6 + 2,
		       "%s: a corrupt chunk is read again once the source distrusts its mirror (%s)", name, rerr.msg);
		char want[64], got[64];
		tap_ok(mlfs_layer_pread(l6, text, got, sizeof got, 0) == (ssize_t)sizeof got &&
		       mlfs_layer_pread(stream, text, want, sizeof want, 0) == (ssize_t)sizeof want &&
		       !memcmp(got, want, sizeof got), "%s: ... with the right bytes", name);
	} else {
		tap_ok(false, "%s: opens with a distrusting source: %s", name, err.msg);
	}
	mlfs_layer_free(l6);
	close_src(s6);
	free(c6);

	/* A fill of a cold layer: one stream, every chunk, the blob digest
	 * checked; then the same with one byte wrong outside every chunk (the
	 * last byte: the footer), which only the blob digest can see. */
	for (int damaged = 0; damaged < 2; damaged++) {
		char *cf = cache_dir(tmp, name, damaged ? "fill-damaged" : "fill");
		struct blobsrc init = plain, *sf;
		struct mlfs_layer *lf = NULL;
		if (damaged)
			init.corrupt_at = (int64_t)f.sd.blob_size - 1;
		r = open_seek(&f, &f.sd, cf, &plain, &sf, &lf, &err);
		if (r == 0) {
			sf->corrupt_at = init.corrupt_at;
			unsigned freqs = sf->requests;
			struct mlfs_err ferr = { 0 };
			int rf = mlfs_layer_fill(lf, false, 4, &ferr);
			struct mlfs_layer_stats fs;
			mlfs_layer_stats(lf, &fs);
			if (!damaged)
				tap_ok(rf == 0 && sf->requests == freqs + 1 && fs.chunks_present == fs.chunks,
				       "%s: filled from one stream, blob digest checked (%s)", name, ferr.msg);
			else
				tap_ok(rf == -EBADMSG && strstr(ferr.msg, "whole blob") && fs.chunks_present == fs.chunks,
				       "%s: a damaged blob is reported, its verified chunks kept (%s)", name, ferr.msg);
			bytes = true;
			for (size_t i = 0; i < mlfs_layer_count(lf); i++)
				bytes &= same_bytes(lf, i, stream, i);
			tap_ok(bytes && sf->requests == freqs + 1, "%s: the filled layer reads right without requests", name);
			tap_is_int(mlfs_layer_fill(lf, false, 4, &ferr), 0, "a full layer fills at once");
			tap_is_int(sf->requests, freqs + 1, "without a request");
		} else {
			tap_ok(false, "%s: opens for the fill: %s", name, err.msg);
		}
		mlfs_layer_free(lf);
		close_src(sf);
		free(cf);
	}

	/* A TOC that does not hash to the manifest's digest is refused. */
	struct mlfs_seekable_desc wrong = f.sd;
	const char *zero = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
	if (wrong.toc_digest)
		wrong.toc_digest = zero;
	if (wrong.zstd_toc_checksum)
		wrong.zstd_toc_checksum = zero;
	char *c5 = cache_dir(tmp, name, "wrong");
	struct blobsrc *s5;
	struct mlfs_layer *l5 = NULL;
	r = open_seek(&f, &wrong, c5, &plain, &s5, &l5, &err);
	tap_ok(r == -EBADMSG && strstr(err.msg, "does not match"), "%s: a TOC of another digest is refused (%s)",
	       name, err.msg);
	mlfs_layer_free(l5);
	close_src(s5);

	/* A registry that ignores Range: -ERANGE, for the caller to stream. */
	struct blobsrc refuse = plain;
	refuse.refuse = true;
	r = open_seek(&f, &f.sd, c5, &refuse, &s5, &l5, &err);
	tap_is_int(r, -ERANGE, "ranges refused: -ERANGE");
	mlfs_layer_free(l5);
	close_src(s5);

	/* No annotation: not seekable, nothing fetched. */
	struct mlfs_seekable_desc none = { .blob_digest = f.sd.blob_digest, .blob_size = f.sd.blob_size,
					   .zstd = f.sd.zstd };
	r = open_seek(&f, &none, c5, &plain, &s5, &l5, &err);
	tap_ok(r == -ENOTSUP && s5->requests == 0, "%s: without annotations: -ENOTSUP, no request", name);
	mlfs_layer_free(l5);
	close_src(s5);
	free(c3);
	free(c4);
	free(c5);
out:
	mlfs_layer_free(toc);
	mlfs_layer_free(stream);
	if (s)
		close_src(s);
	free(cache);
	free(scache);
	json_decref(f.desc);
}

int main(void)
{
	char tmp[] = "/tmp/mlfs-test-seekable-XXXXXX";
	if (!mkdtemp(tmp))
		return 1;
	check_fixture("estargz", tmp);
	check_fixture("zstdchunked", tmp);
	check_fixture("cszstd", tmp);
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		tap_diag("cleanup of %s failed", tmp);
	return tap_done();
}
