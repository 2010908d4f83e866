/* Lazy loading, the state machine:
 *
 *   IDLE --first need--> LOADING --all layers indexed, merged--> READY
 *                           |
 *                           +--any layer failed--> FAILED --next need--> LOADING
 *
 * One coordinator thread per load runs `jobs` workers that take layers in
 * order (bottom first, so the layers needed by most lookups come early),
 * each fetching (or finding cached) and indexing one layer.  The merged
 * view is built aside and published with one atomic store: readers of a
 * published view take no lock.  Requests wait on a condition variable in
 * short slices, so an interrupted request or the timeout ends the wait. */
#include "fs/loader.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "fs/layerload.h"

enum load_state { LOAD_IDLE, LOAD_RUNNING, LOAD_READY, LOAD_FAILED };

struct loader {
	struct mlfs_image *img;   /* thread-safe for layer fetches */
	unsigned jobs;
	unsigned timeout_s;
	_Atomic(struct mlfs_view *) view;

	pthread_mutex_t lock;     /* protects everything below */
	pthread_cond_t cond;
	enum load_state state;
	unsigned generation;      /* bumped when a load ends, so waiters see each outcome */
	bool thread_running;
	pthread_t thread;
	char error[1024];
};

struct load_job {
	struct loader *l;
	struct mlfs_layer **layers;
	pthread_mutex_t lock;     /* protects next, failed, err */
	size_t next;
	bool failed;
	struct mlfs_err err;
};

static void *worker(void *arg)
{
	struct load_job *j = arg;
	size_t n = j->l->img->manifest->n_layers;
	for (;;) {
		pthread_mutex_lock(&j->lock);
		size_t i = j->failed ? n : j->next++;
		pthread_mutex_unlock(&j->lock);
		if (i >= n)
			return NULL;
		struct mlfs_err err = { 0 };
		int r = mlfs_image_layer_open(j->l->img, i, &j->layers[i], &err);
		if (r < 0) {
			pthread_mutex_lock(&j->lock);
			if (!j->failed) {
				j->failed = true;
				j->err = err;
			}
			pthread_mutex_unlock(&j->lock);
			return NULL;
		}
		log_debug(MLFS_AREA_FS, "layer %zu of %zu ready", i + 1, n);
	}
}

static void view_free(struct mlfs_view *v)
{
	if (!v)
		return;
	mlfs_tree_free(v->tree);
	for (size_t i = 0; v->layers && i < v->n_layers; i++)
		mlfs_layer_free(v->layers[i]);
	free(v->layers);
	free(v->inode_node);
	free(v);
}

static int build_view(struct mlfs_view *v, struct mlfs_err *err)
{
	int r = mlfs_tree_merge(v->layers, v->n_layers, &v->tree, err);
	if (r < 0)
		return r;
	v->n_inodes = mlfs_tree_inode_count(v->tree);
	v->inode_node = malloc((v->n_inodes ? v->n_inodes : 1) * sizeof *v->inode_node);
	if (!v->inode_node)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	size_t n = mlfs_tree_count(v->tree);
	/* In reverse, so a hardlinked inode maps to its first name. */
	for (uint32_t node = (uint32_t)n; node-- > 0;) {
		uint32_t ino = mlfs_tree_inode(v->tree, node);
		if (ino >= v->n_inodes)
			return mlfs_err_set(err, EIO, "merged tree: inode %u out of range", ino);
		v->inode_node[ino] = node;
	}
	for (size_t ino = 0; ino < v->n_inodes; ino++) {
		struct mlfs_entry e;
		mlfs_tree_entry(v->tree, v->inode_node[ino], &e, NULL, NULL);
		if (e.kind == MLFS_ENTRY_REG)
			v->total_bytes += e.size;
	}
	return 0;
}

static void *coordinator(void *arg)
{
	struct loader *l = arg;
	size_t n = l->img->manifest->n_layers;
	struct load_job j = { .l = l };
	pthread_mutex_init(&j.lock, NULL);
	struct mlfs_view *v = calloc(1, sizeof *v);
	j.layers = calloc(n ? n : 1, sizeof *j.layers);
	if (!v || !j.layers) {
		j.failed = true;
		mlfs_err_set(&j.err, ENOMEM, "out of memory");
	} else {
		unsigned nw = l->jobs < n ? l->jobs : (unsigned)n;
		pthread_t tids[64];
		unsigned started = 0;
		for (; started < nw && started < 64; started++)
			if (pthread_create(&tids[started], NULL, worker, &j) != 0)
				break;
		if (started == 0)
			worker(&j);
		for (unsigned i = 0; i < started; i++)
			pthread_join(tids[i], NULL);
		v->layers = j.layers;
		v->n_layers = n;
		j.layers = NULL;
		if (!j.failed && build_view(v, &j.err) < 0)
			j.failed = true;
	}

	pthread_mutex_lock(&l->lock);
	if (j.failed) {
		snprintf(l->error, sizeof l->error, "%s", j.err.msg[0] ? j.err.msg : "loading the layers failed");
		log_error(MLFS_AREA_FS, "%s: %s", l->img->canonical, l->error);
		view_free(v);
		l->state = LOAD_FAILED;
	} else {
		atomic_store(&l->view, v);
		l->state = LOAD_READY;
		log_info(MLFS_AREA_FS, "%s: %zu layers ready", l->img->canonical, n);
	}
	free(j.layers);
	pthread_mutex_destroy(&j.lock);
	l->generation++;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

int loader_new(struct mlfs_image *img, unsigned jobs, unsigned timeout_s, struct loader **out)
{
	struct loader *l = calloc(1, sizeof *l);
	if (!l)
		return -ENOMEM;
	l->img = img;
	l->jobs = jobs ? jobs : 1;
	l->timeout_s = timeout_s ? timeout_s : 300;
	pthread_mutex_init(&l->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);
	*out = l;
	return 0;
}

/* Called with l->lock held. */
static void start_locked(struct loader *l)
{
	if (l->state == LOAD_RUNNING || l->state == LOAD_READY)
		return;
	if (l->thread_running) {
		pthread_join(l->thread, NULL); /* the previous, failed load: already finished */
		l->thread_running = false;
	}
	l->state = LOAD_RUNNING;
	if (pthread_create(&l->thread, NULL, coordinator, l) != 0) {
		l->state = LOAD_FAILED;
		snprintf(l->error, sizeof l->error, "cannot start a loader thread");
		return;
	}
	l->thread_running = true;
}

void loader_start(struct loader *l)
{
	pthread_mutex_lock(&l->lock);
	start_locked(l);
	pthread_mutex_unlock(&l->lock);
}

const struct mlfs_view *loader_peek(struct loader *l)
{
	return atomic_load(&l->view);
}

int loader_wait(struct loader *l, bool (*cancelled)(void *priv), void *priv, const struct mlfs_view **out)
{
	const struct mlfs_view *v = atomic_load(&l->view);
	if (v) {
		*out = v;
		return 0;
	}
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += l->timeout_s;
	int r = 0;
	pthread_mutex_lock(&l->lock);
	start_locked(l);
	unsigned gen = l->generation;
	while (l->state == LOAD_RUNNING && l->generation == gen) {
		struct timespec slice, now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > deadline.tv_sec ||
		    (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)) {
			log_error(MLFS_AREA_FS, "%s: timed out after %us waiting for the layers (-o timeout=)",
				  l->img->canonical, l->timeout_s);
			r = -EIO;
			break;
		}
		slice = now;
		slice.tv_nsec += 200 * 1000000L;
		if (slice.tv_nsec >= 1000000000L) {
			slice.tv_sec++;
			slice.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&l->cond, &l->lock, &slice);
		if (cancelled && cancelled(priv)) {
			r = -EINTR;
			break;
		}
	}
	if (r == 0 && l->state != LOAD_READY)
		r = -EIO; /* the reason was logged when the load failed */
	pthread_mutex_unlock(&l->lock);
	if (r == 0)
		*out = atomic_load(&l->view);
	return r;
}

int loader_free(struct loader *l)
{
	if (!l)
		return 0;
	pthread_mutex_lock(&l->lock);
	bool running = l->state == LOAD_RUNNING, join = l->thread_running;
	pthread_mutex_unlock(&l->lock);
	if (running) {
		/* A download cannot be cancelled mid-transfer; at unmount the
		 * process is about to exit anyway, so leave it rather than wait. */
		log_info(MLFS_AREA_FS, "%s: unmounted while layers were still loading", l->img->canonical);
		return -EBUSY;
	}
	if (join)
		pthread_join(l->thread, NULL);
	view_free(atomic_load(&l->view));
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
	free(l);
	return 0;
}
