/* Sparse files (GNU tar --sparse, pax 1.0 sparse): indexed with their holes
 * kept as holes in the data file, read back byte for byte. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layers/layers.h"
#include "tap.h"

#define SIZE (8u << 20)

static int check(const char *dir, const char *format)
{
	char cmd[16384], tar[4200], src[4200];
	snprintf(src, sizeof src, "%s/src", dir);
	snprintf(tar, sizeof tar, "%s/sparse-%s.tar", dir, format);
	snprintf(cmd, sizeof cmd, "tar --sparse --format=%s -C '%s' -cf '%s' holes", format, src, tar);
	if (system(cmd) != 0) {
		tap_diag("%s failed", cmd);
		return -1;
	}
	int fd = open(tar, O_RDONLY);
	struct mlfs_layer_opts o = { .cache_dir = dir };
	struct mlfs_layer *l = NULL;
	struct mlfs_err err = { 0 };
	int r = mlfs_layer_open_fd(fd, &o, &l, &err);
	close(fd);
	tap_is_int(r, 0, "indexes a sparse tar");
	if (r < 0) {
		tap_diag("%s", err.msg);
		return -1;
	}
	struct mlfs_entry e;
	size_t idx = SIZE_MAX;
	for (size_t i = 0; i < mlfs_layer_count(l); i++) {
		mlfs_layer_entry(l, i, &e);
		if (!strcmp(e.path, "holes"))
			idx = i;
	}
	tap_ok(idx != SIZE_MAX, "entry found");
	mlfs_layer_entry(l, idx, &e);
	tap_is_int((long long)e.size, SIZE, "apparent size kept");
	char *buf = malloc(SIZE);
	ssize_t n = mlfs_layer_pread(l, idx, buf, SIZE, 0);
	tap_is_int(n, SIZE, "whole file read");
	bool ok = true;
	for (size_t i = 0; i < SIZE; i++) {
		char want = i == 4096 ? 'A' : i == SIZE / 2 ? 'B' : i == SIZE - 1 ? 'C' : 0;
		if (buf[i] != want) {
			tap_diag("byte %zu is %d, want %d", i, buf[i], want);
			ok = false;
			break;
		}
	}
	tap_ok(ok, "%s: data and holes read back as written", format);
	struct stat st;
	fstat(mlfs_layer_data_fd(l), &st);
	tap_ok((uint64_t)st.st_blocks * 512 < SIZE / 2, "%s: holes stay holes in the data file (%lld bytes on disk)",
	       format, (long long)st.st_blocks * 512);
	free(buf);
	mlfs_layer_free(l);
	return 0;
}

int main(void)
{
	char tmpl[] = "/tmp/mlfs-test-sparse-XXXXXX";
	char *dir = mkdtemp(tmpl);
	char src[4200], file[4300];
	snprintf(src, sizeof src, "%s/src", dir);
	mkdir(src, 0755);
	snprintf(file, sizeof file, "%s/holes", src);
	int fd = open(file, O_WRONLY | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, SIZE) < 0 || pwrite(fd, "A", 1, 4096) != 1 || pwrite(fd, "B", 1, SIZE / 2) != 1 ||
	    pwrite(fd, "C", 1, SIZE - 1) != 1)
		return 1;
	close(fd);
	check(dir, "gnu");
	check(dir, "posix");
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", dir);
	return tap_done();
}
