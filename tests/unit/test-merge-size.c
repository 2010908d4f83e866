/* layers/: memory per entry of the index and the merged tree on a
 * synthetic 100k-entry layer (the budget is 200 bytes per entry). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layergen.h"
#include "tap.h"

#define DIRS 1000
#define FILES 100 /* per directory */

int main(void)
{
	char *dir = lg_tmpdir();
	char cache[4096], file[4096];
	snprintf(cache, sizeof cache, "%s/cache", dir);
	snprintf(file, sizeof file, "%s/big.tar.gz", dir);

	size_t n = DIRS * (FILES + 1);
	struct lg_entry *ents = calloc(n, sizeof *ents);
	char *names = malloc(n * 64);
	size_t k = 0;
	for (int d = 0; d < DIRS; d++) {
		char *p = names + k * 64;
		snprintf(p, 64, "usr/share/pkg%02d/module%03d", d / 100, d);
		ents[k++] = (struct lg_entry){ .path = p, .type = 'd' };
		for (int i = 0; i < FILES; i++) {
			p = names + k * 64;
			snprintf(p, 64, "usr/share/pkg%02d/module%03d/file%06d.py", d / 100, d, i);
			ents[k++] = (struct lg_entry){ .path = p, .data = (i % 10) ? "" : "print(1)\n" };
		}
	}
	tap_ok(lg_write(file, 'g', ents, n) == 0, "%zu-entry layer written", n);
	free(ents);
	free(names);

	struct mlfs_layer *l = NULL;
	struct mlfs_tree *t = NULL;
	struct mlfs_err err;
	struct timespec t0, t1, t2;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	tap_is_int(lg_open(cache, file, NULL, NULL, &l, &err), 0, "indexed");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	tap_is_int(mlfs_tree_merge(&l, 1, &t, &err), 0, "merged");
	clock_gettime(CLOCK_MONOTONIC, &t2);
	if (!t)
		return tap_done();
	size_t nodes = mlfs_tree_count(t);
	double tree = (double)mlfs_tree_mem_bytes(t) / (double)nodes;
	double index = (double)mlfs_layer_mem_bytes(l) / (double)mlfs_layer_count(l);
	tap_diag("%zu nodes: merged tree %.1f B/entry, layer index %.1f B/entry, together %.1f B/entry",
		 nodes, tree, index, tree + index);
	tap_diag("index %.0f ms, merge %.0f ms",
		 (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
		 (double)(t2.tv_sec - t1.tv_sec) * 1e3 + (double)(t2.tv_nsec - t1.tv_nsec) / 1e6);
	tap_ok(tree <= 200, "merged tree within 200 B/entry (%.1f)", tree);
	tap_ok(tree + index <= 200, "tree plus index within 200 B/entry (%.1f)", tree + index);
	mlfs_tree_free(t);
	mlfs_layer_free(l);
	lg_rmrf(dir);
	free(dir);
	return tap_done();
}
