/* Lazy loading, the state machine:
 *
 *   IDLE --first need--> LOADING --all layers indexed, merged--> READY
 *                           |
 *                           +--any layer failed--> FAILED --next need, once
 *                                                    |     the backoff is over--> LOADING
 *                                                    +--the image itself is bad--> (stays)
 *
 * A failed load is retried by the next access, but not sooner than 1 s
 * after the first failure, doubling to 60 s (a dead registry is not
 * hammered by every stat), and never when the failure was the image's
 * own (a digest mismatch, a malformed layer): that is the same bytes every
 * time, so every access answers EIO at once for the life of the mount.
 *
 * One coordinator thread per load runs `jobs` workers that take layers top
 * first: a lookup can be answered as soon as the layers above its match
 * are indexed (fs/partial.c), and the top layers decide most lookups.
 * Each layer is published on its own the moment it is indexed, with a
 * path-sorted table of its entries for those early lookups; published
 * layers belong to the loader and survive a failed load, so a retry only
 * fetches what is missing.  The merged view is built aside and published
 * with one atomic store: readers of a published view or layer take no
 * lock.
 *
 * Requests that need what is not published yet do not wait in their own
 * thread: they are parked (loader_park) on a list that one waker thread
 * answers as layers and views are published, loads fail, deadlines pass or
 * requests are interrupted — checked on every publication and every 200
 * ms.  A parked request costs a list node, not one of FUSE's threads, so
 * a `find` that fans out into thousands of lookups during a load leaves
 * the pool free for everything that needs no layer.  (The blocking
 * loader_wait() stays for callers that have a thread to spare.)
 *
 * At unmount, loader_stop() cancels the downloads under way (libcurl's
 * progress callback sees the image's cancel flag), answers the parked
 * requests and joins every thread, so the process ends by returning from
 * main, not by abandoning threads that are still using libcurl.
 *
 * Seekable layers are "indexed" once their TOC is: the view can be READY
 * with most bytes still in the registry.  After publishing it, the same
 * thread fills in the background what the image marks for prefetch (top
 * layer first), then, with -o prefetch, every other chunk; on-demand reads
 * meanwhile fetch their own chunks and wait only for a chunk already in
 * flight. */
#include "fs/loader.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "fs/layerload.h"
#include "fs/partial.h"

enum load_state { LOAD_IDLE, LOAD_RUNNING, LOAD_READY, LOAD_FAILED };

/* A request waiting for layer `need` (or LOADER_VIEW). */
struct parked {
	struct parked *next;
	size_t need;
	unsigned gen;             /* the load it waits on: another ending means EIO */
	struct timespec deadline;
	bool (*cancelled)(void *arg);
	void (*done)(void *arg, int status);
	void *arg;
	int status;               /* while being answered */
};

struct loader {
	struct mlfs_image *img;   /* thread-safe for layer fetches */
	unsigned jobs;
	unsigned timeout_s;
	bool fill_all;            /* -o prefetch: every chunk of seekable layers, after the view */
	size_t n_layers;
	_Atomic(struct mlfs_view *) view;
	/* Published one by one, never unpublished; sorted before layer. */
	_Atomic(struct mlfs_layer *) *layers;
	uint32_t **sorted;

	pthread_mutex_t lock;     /* protects everything below */
	pthread_cond_t cond;
	enum load_state state;
	unsigned generation;      /* bumped when a load ends, so waiters see each outcome */
	bool failing;             /* a layer of the load under way failed: nobody waits for the rest */
	unsigned failures;        /* loads failed in a row */
	struct timespec retry_at; /* FAILED: no new load before this (CLOCK_MONOTONIC) */
	bool broken;              /* FAILED for good: the image's bytes are wrong */
	bool thread_running;
	bool stopping;            /* loader_stop(): no new load, no new parking */
	struct parked *parked;    /* newest first */
	bool waker_running;
	pthread_t waker;
	bool filling;             /* the thread fills chunks after a READY view */
	unsigned fillers;         /* detached threads filling one layer each (loader_fill_async) */
	pthread_t thread;
	char last_error[1024];    /* for mlfs stat: the last failure, "" when none */
	int64_t last_error_at;    /* its time, seconds since the epoch */
};

/* Called with l->lock held. */
static void note_error_locked(struct loader *l, const char *msg)
{
	size_t n = strlen(msg);
	if (n >= sizeof l->last_error)
		n = sizeof l->last_error - 1; /* cut, as snprintf would */
	memcpy(l->last_error, msg, n);
	l->last_error[n] = '\0';
	l->last_error_at = (int64_t)time(NULL);
}

void loader_note_error(struct loader *l, const char *msg)
{
	pthread_mutex_lock(&l->lock);
	note_error_locked(l, msg);
	pthread_mutex_unlock(&l->lock);
}

void loader_last_error(struct loader *l, char *buf, size_t len, int64_t *when)
{
	pthread_mutex_lock(&l->lock);
	snprintf(buf, len, "%s", l->last_error);
	*when = l->last_error_at;
	pthread_mutex_unlock(&l->lock);
}

struct load_job {
	struct loader *l;
	pthread_mutex_t lock;     /* protects next, failed, err */
	size_t next;              /* counts down: top layer first */
	bool failed;
	struct mlfs_err err;
};

static void *worker(void *arg)
{
	struct load_job *j = arg;
	struct loader *l = j->l;
	for (;;) {
		pthread_mutex_lock(&j->lock);
		size_t i = j->failed || j->next == 0 ? SIZE_MAX : --j->next;
		pthread_mutex_unlock(&j->lock);
		if (i == SIZE_MAX)
			return NULL;
		if (atomic_load(&l->layers[i]))
			continue; /* kept from an earlier, failed load */
		struct mlfs_err err = { 0 };
		struct mlfs_layer *layer = NULL;
		int r = mlfs_image_layer_open(l->img, i, &layer, &err);
		uint32_t *sorted = r == 0 ? partial_sort_layer(layer) : NULL;
		if (r == 0 && !sorted) {
			mlfs_layer_free(layer);
			r = mlfs_err_set(&err, ENOMEM, "out of memory sorting layer %zu", i + 1);
		}
		if (r < 0) {
			pthread_mutex_lock(&j->lock);
			if (!j->failed) {
				j->failed = true;
				j->err = err;
			}
			pthread_mutex_unlock(&j->lock);
			/* Waiters learn now, not when the slowest other download ends;
			 * the layers still in flight are kept for the next attempt. */
			pthread_mutex_lock(&l->lock);
			l->failing = true;
			bool stopping = l->stopping;
			if (!stopping)
				note_error_locked(l, err.msg[0] ? err.msg : "a layer failed");
			pthread_cond_broadcast(&l->cond);
			pthread_mutex_unlock(&l->lock);
			if (!stopping)
				log_error(MLFS_AREA_FS, "%s: %s", l->img->canonical,
					  err.msg[0] ? err.msg : "a layer failed");
			return NULL;
		}
		pthread_mutex_lock(&l->lock);
		l->sorted[i] = sorted;
		atomic_store(&l->layers[i], layer);
		pthread_cond_broadcast(&l->cond);
		pthread_mutex_unlock(&l->lock);
		log_debug(MLFS_AREA_FS, "layer %zu of %zu ready", i + 1, l->n_layers);
	}
}

static void view_free(struct mlfs_view *v)
{
	if (!v)
		return;
	mlfs_tree_free(v->tree);
	free(v->layers);
	for (size_t i = 0; v->entry_node && i < v->n_layers; i++)
		free(v->entry_node[i]);
	free(v->entry_node);
	free(v->entries_above);
	free(v);
}

static int build_view(struct loader *l, struct mlfs_view *v, struct mlfs_err *err)
{
	size_t n = l->n_layers;
	v->n_layers = n;
	v->layers = calloc(n ? n : 1, sizeof *v->layers);
	v->entry_node = calloc(n ? n : 1, sizeof *v->entry_node);
	v->entries_above = calloc(n ? n : 1, sizeof *v->entries_above);
	if (!v->layers || !v->entry_node || !v->entries_above)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	for (size_t i = n; i-- > 0;) {
		v->entries_above[i] = v->n_entries;
		v->n_entries += mlfs_layer_count(atomic_load(&l->layers[i]));
	}
	for (size_t i = 0; i < n; i++) {
		v->layers[i] = atomic_load(&l->layers[i]);
		size_t count = mlfs_layer_count(v->layers[i]);
		v->entry_node[i] = malloc((count ? count : 1) * sizeof *v->entry_node[i]);
		if (!v->entry_node[i])
			return mlfs_err_set(err, ENOMEM, "out of memory");
		memset(v->entry_node[i], 0xff, (count ? count : 1) * sizeof *v->entry_node[i]);
	}
	int r = mlfs_tree_merge(v->layers, n, &v->tree, err);
	if (r < 0)
		return r;
	size_t nodes = mlfs_tree_count(v->tree);
	/* In reverse, so a hardlinked inode maps to its first name. */
	for (uint32_t node = (uint32_t)nodes; node-- > 0;) {
		struct mlfs_entry e;
		unsigned layer;
		size_t entry;
		mlfs_tree_entry(v->tree, node, &e, &layer, &entry);
		if (layer != MLFS_TREE_IMPLICIT)
			v->entry_node[layer][entry] = node;
	}
	for (uint32_t node = 0; node < nodes; node++) {
		struct mlfs_entry e;
		unsigned layer;
		size_t entry;
		mlfs_tree_entry(v->tree, node, &e, &layer, &entry);
		/* Count each inode once: at the name that maps back to it. */
		if (e.kind == MLFS_ENTRY_REG && layer != MLFS_TREE_IMPLICIT && v->entry_node[layer][entry] == node)
			v->total_bytes += e.size;
	}
	v->n_inodes = mlfs_tree_inode_count(v->tree);
	return 0;
}

/* Prefetch: the image's prioritised files, top layer first, then with
 * -o prefetch all the rest.  A failure is logged; the reads that need
 * those bytes will try again. */
static void fill_layers(struct loader *l)
{
	for (int pass = 0; pass < (l->fill_all ? 2 : 1); pass++) {
		for (size_t i = l->n_layers; i-- > 0;) {
			const struct mlfs_layer *layer = atomic_load(&l->layers[i]);
			if (!mlfs_layer_is_seekable(layer))
				continue;
			struct mlfs_err err = { 0 };
			int r = mlfs_layer_fill(layer, pass == 0, l->jobs, &err);
			if (r == -ECANCELED)
				goto out; /* unmounting */
			if (r < 0)
				log_warn(MLFS_AREA_FS, "%s: prefetching layer %zu: %s", l->img->canonical, i + 1,
					 err.msg[0] ? err.msg : "failed");
		}
	}
	if (l->fill_all)
		log_info(MLFS_AREA_FS, "%s: prefetch done", l->img->canonical);
out:
	mlfs_cache_enforce(l->img, 0); /* the chunks just fetched count against the cap */
	pthread_mutex_lock(&l->lock);
	l->filling = false;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

/* Failures that the same bytes would give again: not worth a retry. */
static bool deterministic(int code)
{
	return code == EBADMSG || code == EPROTO || code == EPROTONOSUPPORT || code == E2BIG || code == EFBIG ||
	       code == EINVAL || code == ENOTSUP;
}

/* Called with l->lock held, when a load has failed with errno `code`. */
static void note_failure_locked(struct loader *l, int code)
{
	if (l->stopping)
		return; /* cancelled: not a failure of the image */
	if (deterministic(code)) {
		l->broken = true;
		log_error(MLFS_AREA_FS, "%s: the image cannot be served as it is (%s): no more tries for this "
			  "mount", l->img->canonical, strerror(code));
		return;
	}
	unsigned delay = l->failures >= 6 ? 60 : 1u << l->failures; /* 1, 2, 4, ... 32, 60 s */
	l->failures++;
	clock_gettime(CLOCK_MONOTONIC, &l->retry_at);
	l->retry_at.tv_sec += delay;
	log_info(MLFS_AREA_FS, "%s: next try in %u s, at the first access after that", l->img->canonical, delay);
}

static void *coordinator(void *arg)
{
	struct loader *l = arg;
	/* Workers and indexers inherit this: a write to a pipe whose reader is
	 * gone must fail with EPIPE even while libfuse resets SIGPIPE to its
	 * default at unmount. */
	sigset_t pipe_only;
	sigemptyset(&pipe_only);
	sigaddset(&pipe_only, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_only, NULL);
	size_t n = l->n_layers;
	struct load_job j = { .l = l, .next = n };
	pthread_mutex_init(&j.lock, NULL);
	struct mlfs_view *v = calloc(1, sizeof *v);
	if (!v) {
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
		if (!j.failed && build_view(l, v, &j.err) < 0)
			j.failed = true;
	}

	pthread_mutex_lock(&l->lock);
	if (j.failed) {
		if (!l->failing && !l->stopping) { /* a worker's failure was logged when it happened */
			log_error(MLFS_AREA_FS, "%s: %s", l->img->canonical,
				  j.err.msg[0] ? j.err.msg : "loading the layers failed");
			note_error_locked(l, j.err.msg[0] ? j.err.msg : "loading the layers failed");
		}
		view_free(v);
		l->state = LOAD_FAILED;
		note_failure_locked(l, j.err.code);
	} else {
		atomic_store(&l->view, v);
		l->state = LOAD_READY;
		l->failures = 0;
		log_info(MLFS_AREA_FS, "%s: %zu layers ready", l->img->canonical, n);
	}
	pthread_mutex_destroy(&j.lock);
	l->generation++;
	bool fill = !j.failed;
	l->filling = fill;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	/* Decompression buffers are gone for good: give their memory back. */
	malloc_trim(0);
	if (fill)
		fill_layers(l);
	return NULL;
}

struct async_fill {
	struct loader *l;
	const struct mlfs_layer *layer;
};

static void *fill_one(void *arg)
{
	struct async_fill *a = arg;
	struct loader *l = a->l;
	struct mlfs_err err = { 0 };
	int r = mlfs_layer_fill(a->layer, false, l->jobs, &err);
	if (r < 0 && r != -ECANCELED)
		log_warn(MLFS_AREA_FS, "%s: filling a layer: %s", l->img->canonical, err.msg[0] ? err.msg : "failed");
	mlfs_cache_enforce(l->img, 0);
	pthread_mutex_lock(&l->lock);
	l->fillers--;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	free(a);
	return NULL;
}

void loader_fill_async(struct loader *l, const struct mlfs_layer *layer)
{
	struct async_fill *a = malloc(sizeof *a);
	if (!a)
		return;
	*a = (struct async_fill){ l, layer };
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&l->lock);
	pthread_t t;
	if (l->stopping)
		free(a);
	else if (pthread_create(&t, &attr, fill_one, a) == 0)
		l->fillers++;
	else
		free(a);
	pthread_mutex_unlock(&l->lock);
	pthread_attr_destroy(&attr);
	log_debug(MLFS_AREA_FS, "%s: many files read cold: filling their layer in the background", l->img->canonical);
}

int loader_new(struct mlfs_image *img, unsigned jobs, unsigned timeout_s, bool fill_all, struct loader **out)
{
	struct loader *l = calloc(1, sizeof *l);
	if (!l)
		return -ENOMEM;
	l->img = img;
	l->fill_all = fill_all;
	l->n_layers = img->manifest->n_layers;
	l->jobs = jobs ? jobs : 1;
	l->timeout_s = timeout_s ? timeout_s : 300;
	mlfs_image_layers_touch(img);
	l->layers = calloc(l->n_layers ? l->n_layers : 1, sizeof *l->layers);
	l->sorted = calloc(l->n_layers ? l->n_layers : 1, sizeof *l->sorted);
	if (!l->layers || !l->sorted) {
		free(l->layers);
		free(l->sorted);
		free(l);
		return -ENOMEM;
	}
	pthread_mutex_init(&l->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);
	*out = l;
	return 0;
}

static bool past(const struct timespec *deadline);

/* Called with l->lock held. */
static void start_locked(struct loader *l)
{
	if (l->state == LOAD_RUNNING || l->state == LOAD_READY || l->stopping)
		return;
	if (l->state == LOAD_FAILED && (l->broken || !past(&l->retry_at)))
		return; /* the waiter sees FAILED: EIO at once */
	if (l->thread_running) {
		pthread_join(l->thread, NULL); /* the previous, failed load: already finished */
		l->thread_running = false;
	}
	l->state = LOAD_RUNNING;
	l->failing = false;
	if (pthread_create(&l->thread, NULL, coordinator, l) != 0) {
		l->state = LOAD_FAILED;
		log_error(MLFS_AREA_FS, "cannot start a loader thread");
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

size_t loader_layer_count(const struct loader *l)
{
	return l->n_layers;
}

bool loader_layer_peek(struct loader *l, size_t i, const struct mlfs_layer **layer, const uint32_t **sorted)
{
	struct mlfs_layer *p = i < l->n_layers ? atomic_load(&l->layers[i]) : NULL;
	if (!p)
		return false;
	*layer = p;
	if (sorted)
		*sorted = l->sorted[i]; /* stored before the layer was published */
	return true;
}

static bool past(const struct timespec *deadline)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline->tv_sec || (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

static bool published(struct loader *l, size_t need)
{
	return need == LOADER_VIEW ? atomic_load(&l->view) != NULL : atomic_load(&l->layers[need]) != NULL;
}

static void deadline_in(struct timespec *t, unsigned s)
{
	clock_gettime(CLOCK_MONOTONIC, t);
	t->tv_sec += s;
}

/* Where a wait for `need` stands: 1 while it goes on, 0 when it is there,
 * -EIO when the load `gen` ended (or will) without it or the deadline
 * passed, -EINTR when cancelled or stopping.  Called with l->lock held. */
static int wait_outcome_locked(struct loader *l, size_t need, unsigned gen, const struct timespec *deadline,
			       bool (*cancelled)(void *priv), void *priv)
{
	if (published(l, need))
		return 0;
	if (l->stopping)
		return -EINTR;
	if (l->generation != gen || l->state != LOAD_RUNNING || l->failing)
		return -EIO; /* the load ended (or will) without it: the reason was logged */
	if (past(deadline)) {
		log_error(MLFS_AREA_FS, "%s: timed out after %us waiting for the layers (-o timeout=)",
			  l->img->canonical, l->timeout_s);
		char msg[96];
		snprintf(msg, sizeof msg, "timed out after %us waiting for the layers (-o timeout=)", l->timeout_s);
		note_error_locked(l, msg);
		return -EIO;
	}
	if (cancelled && cancelled(priv))
		return -EINTR;
	return 1;
}

static void wait_slice_locked(struct loader *l)
{
	struct timespec slice;
	clock_gettime(CLOCK_MONOTONIC, &slice);
	slice.tv_nsec += 200 * 1000000L;
	if (slice.tv_nsec >= 1000000000L) {
		slice.tv_sec++;
		slice.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&l->cond, &l->lock, &slice);
}

/* Waits in this thread until `need` is published, the load ends without
 * it, the timeout, or a cancellation.  Called with l->lock held; returns
 * with it held. */
static int wait_locked(struct loader *l, size_t need, bool (*cancelled)(void *priv), void *priv)
{
	struct timespec deadline;
	deadline_in(&deadline, l->timeout_s);
	start_locked(l);
	unsigned gen = l->generation;
	int r;
	while ((r = wait_outcome_locked(l, need, gen, &deadline, cancelled, priv)) == 1)
		wait_slice_locked(l);
	return r;
}

/* The parked requests' thread: answers each as soon as its wait is over. */
static void *waker(void *arg)
{
	struct loader *l = arg;
	pthread_mutex_lock(&l->lock);
	for (;;) {
		struct parked *answer = NULL;
		for (struct parked **pp = &l->parked; *pp;) {
			struct parked *p = *pp;
			int st = wait_outcome_locked(l, p->need, p->gen, &p->deadline, p->cancelled, p->arg);
			if (st == 1) {
				pp = &p->next;
				continue;
			}
			*pp = p->next;
			p->status = st;
			p->next = answer; /* the list is newest first: this makes it oldest first */
			answer = p;
		}
		if (answer) {
			/* Unlocked: a resumed request may park again. */
			pthread_mutex_unlock(&l->lock);
			while (answer) {
				struct parked *p = answer;
				answer = p->next;
				p->done(p->arg, p->status);
				free(p);
			}
			pthread_mutex_lock(&l->lock);
			continue;
		}
		if (l->stopping)
			break; /* and nothing is parked: stopping refuses new ones */
		if (l->parked)
			wait_slice_locked(l);
		else
			pthread_cond_wait(&l->cond, &l->lock);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

int loader_park(struct loader *l, size_t need, bool (*cancelled)(void *arg), void (*done)(void *arg, int status),
		void *arg)
{
	if (need != LOADER_VIEW && need >= l->n_layers)
		return -EINVAL;
	struct parked *p = calloc(1, sizeof *p);
	if (!p)
		return -ENOMEM;
	*p = (struct parked){ .need = need, .cancelled = cancelled, .done = done, .arg = arg };
	deadline_in(&p->deadline, l->timeout_s);
	pthread_mutex_lock(&l->lock);
	start_locked(l);
	p->gen = l->generation;
	int r = wait_outcome_locked(l, need, p->gen, &p->deadline, NULL, NULL);
	if (r == 1 && !l->waker_running) {
		if (pthread_create(&l->waker, NULL, waker, l) == 0) {
			l->waker_running = true;
		} else {
			log_error(MLFS_AREA_FS, "cannot start the thread that answers waiting requests");
			r = -EIO;
		}
	}
	if (r == 1) {
		p->next = l->parked;
		l->parked = p;
		pthread_cond_broadcast(&l->cond);
	}
	pthread_mutex_unlock(&l->lock);
	if (r != 1)
		free(p);
	return r;
}

int loader_wait(struct loader *l, bool (*cancelled)(void *priv), void *priv, const struct mlfs_view **out)
{
	const struct mlfs_view *v = atomic_load(&l->view);
	if (!v) {
		pthread_mutex_lock(&l->lock);
		int r = wait_locked(l, LOADER_VIEW, cancelled, priv);
		pthread_mutex_unlock(&l->lock);
		if (r < 0)
			return r;
		v = atomic_load(&l->view);
	}
	*out = v;
	return 0;
}

int loader_wait_layer(struct loader *l, size_t i, bool (*cancelled)(void *priv), void *priv,
		      const struct mlfs_layer **layer, const uint32_t **sorted)
{
	if (i >= l->n_layers)
		return -EINVAL;
	if (!loader_layer_peek(l, i, layer, sorted)) {
		pthread_mutex_lock(&l->lock);
		int r = wait_locked(l, i, cancelled, priv);
		pthread_mutex_unlock(&l->lock);
		if (r < 0)
			return r;
		loader_layer_peek(l, i, layer, sorted);
	}
	return 0;
}

int loader_stop(struct loader *l, unsigned grace_s)
{
	pthread_mutex_lock(&l->lock);
	l->stopping = true;
	bool waker_running = l->waker_running;
	unsigned loads = (l->state == LOAD_RUNNING) + l->filling + l->fillers;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	mlfs_image_cancel(l->img);
	if (waker_running)
		pthread_join(l->waker, NULL); /* it answered every parked request first */
	struct timespec deadline;
	deadline_in(&deadline, grace_s);
	pthread_mutex_lock(&l->lock);
	l->waker_running = false;
	while ((l->state == LOAD_RUNNING || l->filling || l->fillers) && !past(&deadline))
		wait_slice_locked(l);
	bool busy = l->state == LOAD_RUNNING || l->filling || l->fillers;
	pthread_mutex_unlock(&l->lock);
	if (loads && !busy)
		log_info(MLFS_AREA_FS, "%s: unmounted while layers were loading: downloads cancelled (a partial "
			 "blob is resumed by the next mount)", l->img->canonical);
	return busy ? -EBUSY : 0;
}

int loader_free(struct loader *l)
{
	if (!l)
		return 0;
	pthread_mutex_lock(&l->lock);
	bool running = l->state == LOAD_RUNNING || l->filling || l->fillers, join = l->thread_running;
	pthread_mutex_unlock(&l->lock);
	if (running) {
		/* Not stopped, or stuck past loader_stop's grace: the process
		 * is about to exit anyway, so leave it rather than wait. */
		log_info(MLFS_AREA_FS, "%s: unmounted while layers were still loading or prefetching",
			 l->img->canonical);
		return -EBUSY;
	}
	if (join)
		pthread_join(l->thread, NULL);
	pthread_mutex_lock(&l->lock);
	bool waker_running = l->waker_running;
	l->stopping = true; /* the waker answers what is parked, then ends */
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	if (waker_running)
		pthread_join(l->waker, NULL);
	struct mlfs_layer_stats sum = { 0 };
	for (size_t i = 0; i < l->n_layers; i++) {
		const struct mlfs_layer *layer = atomic_load(&l->layers[i]);
		struct mlfs_layer_stats st;
		if (!layer)
			continue;
		mlfs_layer_stats(layer, &st);
		sum.chunks += st.chunks;
		sum.chunks_present += st.chunks_present;
		sum.chunks_fetched += st.chunks_fetched;
		sum.bytes_fetched += st.bytes_fetched;
		sum.requests += st.requests;
	}
	if (sum.chunks)
		log_info(MLFS_AREA_FS, "%s: %llu of %llu chunks cached; this mount fetched %llu in %llu requests (%llu bytes)",
			 l->img->canonical, (unsigned long long)sum.chunks_present, (unsigned long long)sum.chunks,
			 (unsigned long long)sum.chunks_fetched, (unsigned long long)sum.requests,
			 (unsigned long long)sum.bytes_fetched);
	view_free(atomic_load(&l->view));
	for (size_t i = 0; i < l->n_layers; i++) {
		mlfs_layer_free(atomic_load(&l->layers[i]));
		free(l->sorted[i]);
	}
	/* Our layers are unlocked now: a mount that went over the cap gives it back. */
	mlfs_cache_enforce(l->img, 0);
	free(l->layers);
	free(l->sorted);
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
	free(l);
	return 0;
}
