/* fs/loader.c under concurrency: 16 threads ask for one image's layers and
 * its merged view at once, the way FUSE worker threads do during a load,
 * through every entry point (loader_wait, loader_wait_layer with
 * partial_lookup on top, and the lock-free peeks), first with only the
 * blobs in the cache (each layer downloaded, piped and indexed by its own
 * threads), then with the layers indexed (cached indexes), then a load
 * that fails (a blob missing, offline) and its retry after the backoff.
 * Every answer is checked against the merged tree; the point of the file
 * is to run under ThreadSanitizer (contrib/test.sh, build-tsan), which
 * sees the publication of layers and views, the condition-variable waits
 * and the worker pool race or not.
 *
 * No network: the image is built by hand, opened "offline", with its
 * layer blobs already in the cache's blobs/ directory. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "fs/loader.h"
#include "fs/partial.h"
#include "layergen.h"
#include "tap.h"

#define N_LAYERS 6
#define N_THREADS 16

/* Layer i holds dir/<i> (contents "layer <i>"), shared (contents "<i>":
 * the top one wins), and whiteouts the lower layer's gone-<i-1>. */
static int make_layer(const char *file, unsigned i)
{
	static char data[N_LAYERS][32], own[N_LAYERS][32], gone[N_LAYERS][32], wh[N_LAYERS][32];
	static char big[N_LAYERS][70000];
	snprintf(data[i], sizeof data[i], "layer %u", i);
	snprintf(own[i], sizeof own[i], "dir/%u", i);
	snprintf(gone[i], sizeof gone[i], "gone-%u", i);
	snprintf(wh[i], sizeof wh[i], ".wh.gone-%u", i ? i - 1 : 99);
	memset(big[i], 'a' + (int)i, sizeof big[i] - 1);
	const struct lg_entry ents[] = {
		{ .path = "dir", .type = 'd' },
		{ .path = own[i], .data = data[i] },
		{ .path = "shared", .data = data[i] },
		{ .path = gone[i], .data = "soon gone" },
		{ .path = wh[i], .data = "" },
		{ .path = "big", .data = big[i] }, /* more than a pipe's worth of reads */
	};
	return lg_write(file, 'n', ents, sizeof ents / sizeof ents[0]);
}

struct fixture {
	char *dir;
	char cache[4096];
	char blob[N_LAYERS][8192];   /* where each blob sits in the cache */
	struct mlfs_manifest manifest;
	struct mlfs_descriptor layers[N_LAYERS];
	struct mlfs_config config;
	char diff_ids[N_LAYERS][MLFS_DIGEST_MAX];
	struct mlfs_image img;
};

static int copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	char buf[65536];
	size_t n;
	int r = in && out ? 0 : -1;
	while (r == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0)
		if (fwrite(buf, 1, n, out) != n)
			r = -1;
	if (in)
		fclose(in);
	if (out && fclose(out) != 0)
		r = -1;
	return r;
}

static void fixture_init(struct fixture *f, const char *name)
{
	memset(f, 0, sizeof *f);
	f->dir = lg_tmpdir();
	snprintf(f->cache, sizeof f->cache, "%s/cache-%s", f->dir, name);
	char sub[4200];
	snprintf(sub, sizeof sub, "%s/blobs", f->cache);
	mkdir(f->cache, 0700);
	mkdir(sub, 0700);
	snprintf(sub, sizeof sub, "%s/blobs/sha256", f->cache);
	mkdir(sub, 0700);
	for (unsigned i = 0; i < N_LAYERS; i++) {
		char file[4200];
		snprintf(file, sizeof file, "%s/layer-%u.tar", f->dir, i);
		struct stat st;
		if (make_layer(file, i) < 0 || lg_digest_file(file, f->layers[i].digest) < 0 || stat(file, &st) < 0)
			abort();
		/* Plain tar: the blob is the diff. */
		memcpy(f->diff_ids[i], f->layers[i].digest, MLFS_DIGEST_MAX);
		f->layers[i].media = MLFS_MEDIA_LAYER_TAR;
		f->layers[i].media_type = (char *)"application/vnd.oci.image.layer.v1.tar";
		f->layers[i].size = st.st_size;
		snprintf(f->blob[i], sizeof f->blob[i], "%s/blobs/sha256/%s", f->cache, f->layers[i].digest + 7);
		if (copy_file(file, f->blob[i]) < 0)
			abort();
	}
	f->manifest.media = MLFS_MEDIA_OCI_MANIFEST;
	f->manifest.n_layers = N_LAYERS;
	f->manifest.layers = f->layers;
	f->config.n_diff_ids = N_LAYERS;
	f->config.diff_ids = f->diff_ids;
	f->img.canonical = (char *)"registry.test/loader:latest";
	f->img.cache_dir = f->cache;
	f->img.manifest = &f->manifest;
	f->img.config = &f->config;
	f->img.offline = true; /* never the network: the blobs are in the cache or the load fails */
	f->img.wait_s = 30;
}

static void fixture_free(struct fixture *f)
{
	lg_rmrf(f->dir);
	free(f->dir);
}

/* The loader's end: -EBUSY while its thread still runs after a load. */
static int free_loader(struct loader *l)
{
	for (int i = 0; i < 500; i++) {
		int r = loader_free(l);
		if (r != -EBUSY)
			return r;
		usleep(10000);
	}
	return -EBUSY;
}

struct reader {
	struct loader *l;
	unsigned id;
	pthread_barrier_t *start;
	int expect;           /* 0, or the -errno every wait must give */
	char failure[256];    /* "" when every answer was right */
};

static int wait_layer(void *priv, size_t i, const struct mlfs_layer **layer, const uint32_t **sorted)
{
	return loader_wait_layer(priv, i, NULL, NULL, layer, sorted);
}

static void fail(struct reader *r, const char *what)
{
	if (!r->failure[0])
		snprintf(r->failure, sizeof r->failure, "reader %u: %s", r->id, what);
}

/* What the merged view must say, whichever thread asks. */
static void check_view(struct reader *r, const struct mlfs_view *v)
{
	char path[64], want[64], buf[64];
	uint32_t node;
	if (v->n_layers != N_LAYERS)
		return fail(r, "view has the wrong layer count");
	for (unsigned i = 0; i < N_LAYERS; i++) {
		snprintf(path, sizeof path, "dir/%u", i);
		snprintf(want, sizeof want, "layer %u", i);
		struct mlfs_entry e;
		unsigned li;
		size_t ei;
		if (mlfs_tree_lookup_path(v->tree, path, &node) != 0)
			return fail(r, "dir/<i> missing");
		mlfs_tree_entry(v->tree, node, &e, &li, &ei);
		ssize_t n = mlfs_layer_pread(v->layers[li], ei, buf, sizeof buf, 0);
		if (li != i || n != (ssize_t)strlen(want) || memcmp(buf, want, (size_t)n) != 0)
			return fail(r, "dir/<i> has the wrong bytes");
		snprintf(path, sizeof path, "gone-%u", i);
		bool present = mlfs_tree_lookup_path(v->tree, path, &node) == 0;
		if (present != (i == N_LAYERS - 1))
			return fail(r, "a whiteout was not applied");
	}
	struct mlfs_entry e;
	unsigned li;
	size_t ei;
	if (mlfs_tree_lookup_path(v->tree, "shared", &node) != 0)
		return fail(r, "shared missing");
	mlfs_tree_entry(v->tree, node, &e, &li, &ei);
	if (li != N_LAYERS - 1)
		return fail(r, "shared is not the top layer's");
	if (mlfs_tree_lookup_path(v->tree, "big", &node) != 0)
		return fail(r, "big missing");
	mlfs_tree_entry(v->tree, node, &e, &li, &ei);
	if (mlfs_layer_pread(v->layers[li], ei, buf, 1, e.size - 1) != 1 || buf[0] != 'a' + N_LAYERS - 1)
		return fail(r, "big has the wrong bytes");
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	pthread_barrier_wait(r->start);
	const struct mlfs_view *v = NULL;
	switch (r->id % 4) {
	case 0: { /* a listing: the whole view */
		int rc = loader_wait(r->l, NULL, NULL, &v);
		if (rc != r->expect) {
			char what[64];
			snprintf(what, sizeof what, "loader_wait gave %d", rc);
			return fail(r, what), NULL;
		}
		break;
	}
	case 1: { /* a lookup before the merge: partial_lookup over the layers */
		struct partial_src src = { loader_layer_count(r->l), wait_layer, r->l };
		unsigned layer;
		size_t entry;
		char name[16];
		snprintf(name, sizeof name, "%u", r->id % N_LAYERS);
		int rc = partial_lookup(&src, "dir", name, &layer, &entry);
		/* Failing, the layers above may still answer: dir/<top> is there. */
		if (rc != 0 && rc != -EAGAIN && rc != r->expect)
			return fail(r, "partial_lookup gave an unexpected result"), NULL;
		if (rc == 0 && layer != r->id % N_LAYERS)
			return fail(r, "partial_lookup found the wrong layer"), NULL;
		rc = partial_lookup(&src, "", "shared", &layer, &entry);
		if (rc == 0 && layer != N_LAYERS - 1)
			return fail(r, "partial_lookup: shared is not the top layer's"), NULL;
		if (loader_wait(r->l, NULL, NULL, &v) != r->expect)
			return fail(r, "loader_wait after partial_lookup"), NULL;
		break;
	}
	case 2: { /* one layer, waited for; its sorted table must come with it */
		const struct mlfs_layer *layer;
		const uint32_t *sorted;
		size_t i = r->id % N_LAYERS;
		int rc = loader_wait_layer(r->l, i, NULL, NULL, &layer, &sorted);
		if (rc != r->expect && !(r->expect && rc == 0))
			return fail(r, "loader_wait_layer gave an unexpected result"), NULL;
		if (rc == 0 && (!sorted || mlfs_layer_count(layer) == 0 || sorted[0] >= mlfs_layer_count(layer)))
			return fail(r, "a published layer without its sorted table"), NULL;
		if (loader_wait(r->l, NULL, NULL, &v) != r->expect)
			return fail(r, "loader_wait after loader_wait_layer"), NULL;
		break;
	}
	default: /* the lock-free peeks that every FUSE handler tries first */
		loader_start(r->l);
		/* A while, not forever: a failed load never publishes a view,
		 * and a wait that outlasts the backoff would start a retry. */
		for (int spins = 0; spins < 200 && !(v = loader_peek(r->l)); spins++) {
			for (size_t i = 0; i < loader_layer_count(r->l); i++) {
				const struct mlfs_layer *layer;
				const uint32_t *sorted;
				if (loader_layer_peek(r->l, i, &layer, &sorted) && !sorted)
					return fail(r, "a peeked layer without its sorted table"), NULL;
			}
			usleep(100);
		}
		if (!v && loader_wait(r->l, NULL, NULL, &v) != r->expect)
			return fail(r, "loader_wait after peeking"), NULL;
		break;
	}
	if (r->expect == 0) {
		if (!v)
			return fail(r, "no view"), NULL;
		check_view(r, v);
		if (loader_peek(r->l) != v)
			fail(r, "two views published");
	}
	return NULL;
}

/* Parked requests: each remembers how it was answered. */
#define N_PARKED 1000

struct parked_req {
	atomic_int calls;
	atomic_int status;
	atomic_bool *cancel; /* NULL: never cancelled */
};

static void parked_done(void *arg, int status)
{
	struct parked_req *p = arg;
	atomic_store(&p->status, status);
	atomic_fetch_add(&p->calls, 1);
}

static bool parked_cancelled(void *arg)
{
	struct parked_req *p = arg;
	return p->cancel && atomic_load(p->cancel);
}

/* Parks n requests from this one thread (layer i % (N_LAYERS + 1), the
 * last being the view); those answered at once are marked as such.
 * Returns how many were parked. */
static unsigned park_many(struct loader *l, struct parked_req *p, unsigned n, atomic_bool *cancel)
{
	unsigned parked = 0;
	for (unsigned i = 0; i < n; i++) {
		size_t need = i % (N_LAYERS + 1) == N_LAYERS ? LOADER_VIEW : i % (N_LAYERS + 1);
		atomic_init(&p[i].calls, 0);
		atomic_init(&p[i].status, 1);
		p[i].cancel = cancel;
		int r = loader_park(l, need, parked_cancelled, parked_done, &p[i]);
		if (r == 1) {
			parked++;
		} else {
			atomic_store(&p[i].status, r);
			atomic_store(&p[i].calls, 1);
		}
	}
	return parked;
}

/* Waits (bounded) until every request was answered; true if each was
 * answered exactly once, with `want`. */
static bool all_answered(struct parked_req *p, unsigned n, int want)
{
	for (int spins = 0; spins < 3000; spins++) {
		unsigned done = 0;
		for (unsigned i = 0; i < n; i++)
			done += atomic_load(&p[i].calls) > 0;
		if (done == n)
			break;
		usleep(10000);
	}
	usleep(50000); /* and no second answer comes */
	for (unsigned i = 0; i < n; i++)
		if (atomic_load(&p[i].calls) != 1 || atomic_load(&p[i].status) != want) {
			tap_diag("request %u: answered %d times, last with %d", i, atomic_load(&p[i].calls),
				 atomic_load(&p[i].status));
			return false;
		}
	return true;
}

/* N_THREADS readers at once; every one must have seen `expect`. */
static void readers(struct loader *l, int expect, const char *what)
{
	pthread_t t[N_THREADS];
	struct reader r[N_THREADS];
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, N_THREADS);
	for (unsigned i = 0; i < N_THREADS; i++) {
		r[i] = (struct reader){ .l = l, .id = i, .start = &start, .expect = expect };
		if (pthread_create(&t[i], NULL, reader_main, &r[i]) != 0)
			abort();
	}
	const char *failure = NULL;
	for (unsigned i = 0; i < N_THREADS; i++) {
		pthread_join(t[i], NULL);
		if (r[i].failure[0] && !failure)
			failure = r[i].failure;
	}
	pthread_barrier_destroy(&start);
	if (failure)
		tap_diag("%s", failure);
	tap_ok(!failure, "%s: %d readers", what, N_THREADS);
}

int main(void)
{
	/* The failures below are expected: their errors go to stderr, not TAP.
	 * TEST_LOADER_DEBUG=1 shows the loader's own account of each load. */
	bool debug = getenv("TEST_LOADER_DEBUG") != NULL;
	mlfs_log_setup(debug ? MLFS_LOG_DEBUG : MLFS_LOG_ERROR, debug ? ~0u : 0, false);
	struct fixture f;
	fixture_init(&f, "main");
	struct loader *l = NULL;

	/* Cold: every layer piped from its blob into an indexer, 4 at a time. */
	tap_is_int(loader_new(&f.img, 4, 30, false, &l), 0, "loader_new");
	readers(l, 0, "cold load");
	tap_is_int(free_loader(l), 0, "loader_free after a cold load");

	/* Warm: the indexes are cached now; the blobs were dropped. */
	tap_is_int(loader_new(&f.img, 4, 30, false, &l), 0, "loader_new again");
	readers(l, 0, "cached indexes");
	tap_is_int(free_loader(l), 0, "loader_free after a warm load");

	/* One worker per layer and one for all, the extremes of the pool. */
	for (unsigned jobs = 1; jobs <= N_LAYERS + 2; jobs += N_LAYERS + 1) {
		struct fixture g;
		fixture_init(&g, "jobs");
		tap_ok(loader_new(&g.img, jobs, 30, false, &l) == 0, "loader_new, jobs=%u", jobs);
		readers(l, 0, jobs == 1 ? "cold load, one worker" : "cold load, more workers than layers");
		tap_is_int(free_loader(l), 0, "loader_free");
		fixture_free(&g);
	}

	/* Parking: a thousand requests from one thread, no thread each; the
	 * waker answers every one once its layer or the view is published. */
	static struct parked_req preq[N_PARKED];
	struct fixture pk;
	fixture_init(&pk, "park");
	tap_is_int(loader_new(&pk.img, 2, 30, false, &l), 0, "loader_new for parking");
	unsigned parked = park_many(l, preq, N_PARKED, NULL);
	tap_ok(parked > 0, "requests parked during a cold load (%u of %u)", parked, N_PARKED);
	tap_ok(all_answered(preq, N_PARKED, 0), "every parked request answered once, with success");
	tap_is_int(loader_park(l, LOADER_VIEW, NULL, parked_done, &preq[0]), 0, "the view published: not parked");
	tap_is_int(loader_park(l, N_LAYERS, NULL, parked_done, &preq[0]), -EINVAL, "no such layer: EINVAL");
	tap_is_int(free_loader(l), 0, "loader_free after parking");
	fixture_free(&pk);

	/* A parked request whose caller gives up (an interrupted FUSE
	 * request) is answered EINTR; the rest of the load goes on.  The top
	 * layer's build lock is held here, so the load cannot finish. */
	struct fixture st;
	fixture_init(&st, "stop");
	int lock = -1;
	tap_is_int(mlfs_cache_lock_build(st.cache, st.diff_ids[N_LAYERS - 1], 1, NULL, &lock), 0,
		   "the top layer's build lock, held by \"another process\"");
	tap_is_int(loader_new(&st.img, 2, 30, false, &l), 0, "loader_new for stopping");
	atomic_bool cancel = false;
	parked = park_many(l, preq, 20, &cancel);
	tap_is_int((int)parked, 20, "20 requests parked behind the held lock");
	usleep(300 * 1000);
	unsigned early = 0;
	for (unsigned i = 0; i < 20; i++)
		early += atomic_load(&preq[i].calls) != 0 && i % (N_LAYERS + 1) == N_LAYERS - 1;
	tap_is_int((int)early, 0, "none waiting on the top layer answered while it cannot load");
	atomic_store(&cancel, true);
	bool ok = true;
	for (unsigned i = 0; i < 20; i++) {
		for (int spins = 0; spins < 300 && !atomic_load(&preq[i].calls); spins++)
			usleep(10000);
		int want = i % (N_LAYERS + 1) == N_LAYERS || i % (N_LAYERS + 1) == N_LAYERS - 1 ? -EINTR : 0;
		if (atomic_load(&preq[i].calls) != 1 || (atomic_load(&preq[i].status) != want &&
							   atomic_load(&preq[i].status) != -EINTR))
			ok = false;
	}
	tap_ok(ok, "cancelled requests answered EINTR (those whose layer came: success)");

	/* Stop: parked requests are answered EINTR and the worker stuck on
	 * the lock is cancelled (mlfs_image_cancel), so every thread ends. */
	parked = park_many(l, preq, 14, NULL);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	tap_is_int(loader_stop(l, 10), 0, "loader_stop ends the load stuck on a lock");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	tap_ok(t1.tv_sec - t0.tv_sec < 5, "within the lock poll, not the 30 s lock timeout");
	ok = true;
	for (unsigned i = 0; i < 14; i++)
		if (atomic_load(&preq[i].calls) != 1 ||
		    (atomic_load(&preq[i].status) != -EINTR && atomic_load(&preq[i].status) != 0))
			ok = false;
	tap_ok(ok && parked > 0, "every request parked before the stop answered once (EINTR)");
	tap_is_int(loader_park(l, LOADER_VIEW, NULL, parked_done, &preq[0]), -EINTR, "parking after stop: EINTR");
	tap_is_int(free_loader(l), 0, "loader_free after stop");
	mlfs_cache_unlock_build(st.cache, st.diff_ids[N_LAYERS - 1], lock);
	fixture_free(&st);

	/* A load that fails: a blob missing from the cache, offline.  Every
	 * waiter hears EIO; the next access within the backoff too, without a
	 * new load; after the backoff (1 s) one load starts and succeeds. */
	struct fixture h;
	fixture_init(&h, "fail");
	char aside[8300];
	snprintf(aside, sizeof aside, "%s.aside", h.blob[2]);
	tap_is_int(rename(h.blob[2], aside), 0, "layer 3's blob moved away");
	tap_is_int(loader_new(&h.img, 3, 30, false, &l), 0, "loader_new, one blob missing");
	readers(l, -EIO, "failing load");
	const struct mlfs_view *v = NULL;
	tap_is_int(loader_wait(l, NULL, NULL, &v), -EIO, "within the backoff: EIO at once");
	tap_is_int(rename(aside, h.blob[2]), 0, "the blob is back");
	/* The backoff runs from the end of the failed load, a little after
	 * its waiters heard of it: 1 s, and some margin for a slow machine. */
	usleep(1600 * 1000);
	readers(l, 0, "retry after the backoff");
	tap_is_int(free_loader(l), 0, "loader_free after a retried load");
	fixture_free(&h);

	fixture_free(&f);
	return tap_done();
}
