/* libFuzzer: arbitrary bytes as a cached index file (index/sha256/<hex>),
 * opened the way a mount opens a layer it indexed before, then used: every
 * entry and xattr read, a few bytes of each file, and the layer merged over
 * itself.  A cache directory is shared and outlives the binary that wrote
 * it, so a corrupted or hostile index file must be refused (or rebuilt),
 * never crash the daemon.
 *
 * The file ends with the sha256 of everything before it (layers/indexfile.c),
 * which random bytes never match: the harness replaces the input's last 72
 * bytes with the right checksum, so that the fuzzer reaches the decoder's
 * bounds checks (a bit flip the checksum misses, or a file written on
 * purpose).  The file is stored under the key its header names, when that
 * is a digest (else under KEY), as the cache would have it: so real index
 * files are seeds as they are (README.md), and the "index of another
 * layer" check is still reached by inputs whose key does not parse. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/digest.h"
#include "common/log.h"
#include "layers/internal.h"
#include "layers/layers.h"

#define KEY "sha256:0000000000000000000000000000000000000000000000000000000000000001"
#define HEADER_SIZE 160u   /* layers/indexfile.c */
#define TRAILER_SIZE 72u
#define DATA_MAX (64u << 20) /* a (sparse) data file this big at most is made to match the header */

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char cache[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* "cached index unusable, rebuilding" on every input is noise. */
	mlfs_log_setup(MLFS_LOG_ERROR, 0, false);
	snprintf(cache, sizeof cache, "/tmp/mlfs-fuzz-indexfile-%d", (int)getpid());
	(void)!mkdir(cache, 0700);
	if (mlfs_store_mkdirs(cache, "index") < 0 || mlfs_store_mkdirs(cache, "data") < 0)
		abort();
	return 0;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	ssize_t w = len ? write(fd, buf, len) : 0;
	close(fd);
	return w == (ssize_t)len ? 0 : -1;
}

/* A seekable layer's chunks come from here: the registry is always down. */
static int no_read(void *priv, uint64_t off, size_t len, void *buf, struct mlfs_err *err)
{
	return mlfs_err_set(err, EIO, "no registry while fuzzing");
}

static void use(struct mlfs_layer *l)
{
	char buf[64];
	for (size_t i = 0; i < mlfs_layer_count(l); i++) {
		struct mlfs_entry e;
		mlfs_layer_entry(l, i, &e);
		if (strlen(e.path) > (1u << 20) || (e.link && strlen(e.link) > (1u << 20)))
			abort();
		for (uint32_t j = 0; j < e.n_xattrs; j++) {
			const char *name;
			const void *value;
			size_t len;
			mlfs_layer_xattr(l, i, j, &name, &value, &len);
			if (len)
				(void)((const volatile char *)value)[len - 1];
			(void)strlen(name);
		}
		if (e.kind == MLFS_ENTRY_REG) {
			ssize_t r = mlfs_layer_pread(l, i, buf, sizeof buf, 0);
			if (r > (ssize_t)sizeof buf)
				abort();
			if (e.size > 1)
				(void)mlfs_layer_pread(l, i, buf, sizeof buf, e.size - 1);
		}
	}
	struct mlfs_layer *two[2] = { l, l };
	struct mlfs_tree *t = NULL;
	struct mlfs_err err = { 0 };
	if (mlfs_tree_merge(two, 2, &t, &err) == 0) {
		for (uint32_t i = 1; i < mlfs_tree_count(t); i++) {
			uint32_t found;
			if (mlfs_tree_lookup(t, mlfs_tree_parent(t, i), mlfs_tree_name(t, i), &found) == 0 &&
			    found != i)
				abort();
		}
		mlfs_tree_free(t);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	char key[MLFS_DIGEST_MAX] = KEY;
	if (n >= HEADER_SIZE && memchr(d + 88, '\0', MLFS_DIGEST_MAX) && mlfs_digest_validate((const char *)d + 88) == 0)
		memcpy(key, d + 88, MLFS_DIGEST_MAX);
	char *index_path = mlfs_store_path(cache, "index", key), *data_path = mlfs_store_path(cache, "data", key);
	char *map_path = mlfs_store_path(cache, "chunks", key);
	uint8_t *file = malloc(n ? n : 1);
	if (!file || !index_path || !data_path || !map_path)
		abort();
	memcpy(file, d, n);
	if (n >= HEADER_SIZE + TRAILER_SIZE) {
		char sum[MLFS_DIGEST_MAX] = { 0 };
		if (mlfs_digest_buf(file, n - TRAILER_SIZE, sum) < 0)
			abort();
		memcpy(file + n - TRAILER_SIZE, sum, TRAILER_SIZE);
	}
	/* The data file as the header says it is, when that is small enough:
	 * a size mismatch alone would stop every input before the entries. */
	uint64_t data_size = n >= HEADER_SIZE ? get64(file + 56) : 0;
	uint32_t codec = n >= HEADER_SIZE ? get32(file + 24) : 0;
	int fd = open(data_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, data_size <= DATA_MAX ? (off_t)data_size : 0) < 0)
		abort();
	/* Some bytes to read, so preads return something; never past the
	 * size just set. */
	size_t some = n < 4096 ? n : 4096;
	if (data_size <= DATA_MAX && some > data_size)
		some = (size_t)data_size;
	if (data_size > DATA_MAX)
		some = 0;
	(void)!pwrite(fd, d, some, 0);
	close(fd);
	if (write_file(index_path, file, n) < 0)
		abort();
	free(file);

	struct mlfs_layer *l = NULL;
	struct mlfs_err err = { 0 };
	int r;
	if (codec == MLFS_CODEC_NONE) {
		struct mlfs_layer_opts o = { .cache_dir = cache, .diff_id = key };
		r = mlfs_layer_open_cached(&o, &l, &err);
	} else {
		struct mlfs_blob_ranges src = { .read = no_read };
		r = mlfs_layer_open_key(cache, key, &src, &l, &err);
	}
	if (r == 0) {
		use(l);
		mlfs_layer_free(l);
	} else if (l) {
		abort(); /* a failure returns nothing */
	}
	/* Nothing of this input is left for the next: each key's files go (a
	 * chunk map from an earlier input would be checked against this one). */
	unlink(index_path);
	unlink(data_path);
	unlink(map_path);
	free(index_path);
	free(data_path);
	free(map_path);
	return 0;
}
