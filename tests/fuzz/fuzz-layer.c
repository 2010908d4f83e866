/* libFuzzer: arbitrary bytes as a layer blob, through the indexer (every
 * decompressor, the tar parser, path and whiteout rules) and the merge. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "layers/layers.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Refused entries are logged as warnings: at fuzzing speed that is all noise. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	mlfs_log_setup(MLFS_LOG_ERROR, 0, false);
	return 0;
}

struct mem {
	const uint8_t *p;
	size_t left;
};

/* Odd chunk sizes, so that libarchive sees headers split across reads. */
static int mem_read(void *priv, const void **buf, size_t *len)
{
	struct mem *m = priv;
	size_t n = m->left < 1021 ? m->left : 1021;
	*buf = m->p;
	*len = n;
	m->p += n;
	m->left -= n;
	return 0;
}

static const char *cache_dir(void)
{
	/* The harness's one piece of state: a scratch cache made once per process. */
	static char dir[64];
	if (!dir[0]) {
		snprintf(dir, sizeof dir, "/tmp/mlfs-fuzz-layer-%d", (int)getpid());
		(void)!mkdir(dir, 0700);
	}
	return dir;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct mem m = { d, n };
	struct mlfs_layer_source src = { mem_read, &m };
	struct mlfs_layer_opts o = { .cache_dir = cache_dir() };
	struct mlfs_layer *l[2] = { NULL, NULL };
	struct mlfs_err err;
	if (mlfs_layer_open_source(&src, &o, &l[0], &err) < 0)
		return 0;
	/* The layer over itself exercises whiteouts and hardlinks across layers. */
	l[1] = l[0];
	struct mlfs_tree *t = NULL;
	if (mlfs_tree_merge(l, 2, &t, &err) == 0) {
		char buf[64];
		for (uint32_t i = 0; i < mlfs_tree_count(t); i++) {
			struct mlfs_entry e;
			unsigned li;
			size_t ei;
			mlfs_tree_entry(t, i, &e, &li, &ei);
			if (e.kind == MLFS_ENTRY_REG && li != MLFS_TREE_IMPLICIT)
				mlfs_layer_pread(l[li], ei, buf, sizeof buf, 0);
			uint32_t found;
			if (i && mlfs_tree_lookup(t, mlfs_tree_parent(t, i), mlfs_tree_name(t, i), &found) == 0 &&
			    found != i)
				abort();
		}
		mlfs_tree_free(t);
	}
	mlfs_layer_free(l[0]);
	return 0;
}
