/* Progress of pull and export: what a person waiting at a terminal, or a
 * CI log, is told while layers come in.
 *
 * Two sides that never wait for each other.  The download side (fetch/
 * calls on_event() from whichever thread moves bytes: the command's own,
 * a range job, an indexer) only adds to relaxed atomic counters of its
 * layer — no clock, no lock, no output — so progress costs the download
 * nothing.  The drawing side is one thread that wakes every 100 ms, and
 * the command's thread when a layer ends; both draw under one lock, and
 * never less than 100 ms after the last drawing (but for the very last):
 * at most 10 redraws a second, whatever the download rate or the number
 * of layers.
 *
 * On a terminal the layers being fetched and a total line are redrawn in
 * place (cursor up over the previous drawing, clear to the end of the
 * screen); a finished layer's line is printed once above them and
 * scrolls away, so the redrawn part is only ever as tall as the layers
 * in flight plus one, and fits any terminal.  Lines are cut to the
 * terminal's width: a wrapped line would throw the cursor-up count off.
 * Elsewhere (a pipe, a file, a CI log) each layer gets a line when its
 * first bytes move and one when it is done, and nothing is redrawn.
 *
 * "Already cached" is what the layer did not have to fetch: all of it
 * when its index was in the cache, else the bytes of a kept blob or of a
 * partial download resumed — never more than what was not fetched (a
 * blob kept with --keep-blobs is read again to be indexed). */
#include "fs/cli/progress.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>

#include "fs/cli/units.h"

#define TICK_MS 100 /* at most 10 redraws a second */

enum layer_state { LAYER_WAITING, LAYER_ACTIVE, LAYER_DONE };

struct layer_progress {
	uint64_t size;                 /* the blob's, from the manifest */
	_Atomic uint64_t fetched;      /* bytes from the registry */
	_Atomic uint64_t reused;       /* bytes of its blob that were in the cache */
	atomic_bool indexed;           /* found indexed in the cache */
	atomic_int state;              /* enum layer_state; begin/end are written before it (release) */
	struct timespec begin, end;
	char name[24];                 /* "sha256:0123456789ab" */
	bool announced, reported;      /* protected by draw: its "fetching" and final lines are out */
};

struct cli_progress {
	enum cli_progress_mode mode;
	char *canonical;
	size_t n;                      /* set by start(), before any layer moves */
	struct layer_progress *layers;
	struct timespec start;
	pthread_mutex_t draw;          /* protects stderr's drawing: live, and each layer's announced/reported */
	unsigned live;                 /* lines of the redrawn part now on the terminal */
	struct timespec drawn;         /* the last drawing (protected by draw) */
	pthread_mutex_t lock;          /* protects stop */
	pthread_cond_t cond;
	bool stop;
	bool thread_running;           /* only the command's thread touches it */
	pthread_t thread;
};

enum cli_progress_mode cli_progress_mode(bool quiet)
{
	const char *env = getenv("MLFS_QUIET");
	if (quiet || (env && *env && strcmp(env, "0")))
		return CLI_PROGRESS_QUIET;
	/* A terminal that cannot move its cursor (Emacs' shell, some CI
	 * runners) gets the plain lines. */
	const char *term = getenv("TERM");
	if (!isatty(STDERR_FILENO) || (term && !strcmp(term, "dumb")))
		return CLI_PROGRESS_LINES;
	return CLI_PROGRESS_TTY;
}

static void on_event(void *priv, size_t i, enum mlfs_progress_event ev, uint64_t n)
{
	struct cli_progress *p = priv;
	if (i >= p->n)
		return;
	struct layer_progress *l = &p->layers[i];
	switch (ev) {
	case MLFS_PROGRESS_FETCHED:
		atomic_fetch_add_explicit(&l->fetched, n, memory_order_relaxed);
		break;
	case MLFS_PROGRESS_REUSED:
		atomic_fetch_add_explicit(&l->reused, n, memory_order_relaxed);
		break;
	case MLFS_PROGRESS_INDEXED:
		atomic_store_explicit(&l->indexed, true, memory_order_relaxed);
		break;
	}
}

struct cli_progress *cli_progress_new(enum cli_progress_mode mode, struct mlfs_image_opts *opts)
{
	if (mode == CLI_PROGRESS_QUIET)
		return NULL;
	struct cli_progress *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	p->mode = mode;
	pthread_mutex_init(&p->draw, NULL);
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	opts->progress = on_event;
	opts->progress_priv = p;
	return p;
}

static double seconds_since(const struct timespec *t, const struct timespec *now)
{
	return (double)(now->tv_sec - t->tv_sec) + (double)(now->tv_nsec - t->tv_nsec) / 1e9;
}

/* What the layer fetched, what it did not have to, and so how far it is. */
static void figures(const struct layer_progress *l, uint64_t *fetched, uint64_t *cached, uint64_t *done)
{
	uint64_t f = atomic_load_explicit(&l->fetched, memory_order_relaxed);
	uint64_t c = atomic_load_explicit(&l->indexed, memory_order_relaxed) ?
			     l->size : atomic_load_explicit(&l->reused, memory_order_relaxed);
	uint64_t room = l->size > f ? l->size - f : 0;
	if (c > room)
		c = room;
	*fetched = f;
	*cached = c;
	*done = f + c < l->size ? f + c : l->size;
}

static unsigned columns(void)
{
	struct winsize ws;
	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
		return ws.ws_col;
	return 80;
}

/* One redrawn line: "label [=====>    ]  1.2 MiB / 4.0 MiB  3.1 MiB/s  ETA 1s",
 * the bar left out (and then the line cut) when the terminal is narrow. */
static void live_line(FILE *out, unsigned cols, const char *label, uint64_t done, uint64_t total, double rate)
{
	char d[32], t[32], r[32], eta[32], figs[160];
	mlfs_format_size(done, d, sizeof d);
	mlfs_format_size(total, t, sizeof t);
	mlfs_format_rate(rate, r, sizeof r);
	mlfs_format_eta(done >= total ? 0 : rate > 0 ? (double)(total - done) / rate : -1, eta, sizeof eta);
	snprintf(figs, sizeof figs, "%s / %s  %s  ETA %s", d, t, r, eta);
	size_t width = cols - 1, fixed = strlen(label) + 2 + strlen(figs) + 2;
	char bar[64] = "";
	if (width > fixed + 7) {
		size_t inner = width - fixed - 2;
		if (inner > 40)
			inner = 40;
		size_t fill = total ? (size_t)((double)inner * (double)done / (double)total) : inner;
		if (fill > inner)
			fill = inner;
		bar[0] = '[';
		for (size_t k = 0; k < inner; k++)
			bar[1 + k] = k < fill ? '=' : k == fill ? '>' : ' ';
		bar[1 + inner] = ']';
		bar[2 + inner] = '\0';
	}
	char line[512];
	snprintf(line, sizeof line, "%s  %s%s%s", label, bar, bar[0] ? "  " : "", figs);
	fprintf(out, "%.*s\n", (int)width, line);
}

static void final_line(FILE *out, const struct cli_progress *p, size_t i)
{
	const struct layer_progress *l = &p->layers[i];
	uint64_t fetched, cached, done;
	figures(l, &fetched, &cached, &done);
	char f[32], c[32], took[32];
	mlfs_format_size(fetched, f, sizeof f);
	mlfs_format_size(cached, c, sizeof c);
	mlfs_format_elapsed(seconds_since(&l->begin, &l->end), took, sizeof took);
	if (fetched == 0) {
		mlfs_format_size(l->size, c, sizeof c);
		fprintf(out, "layer %zu/%zu %s: already cached (%s)\n", i + 1, p->n, l->name, c);
	} else if (cached) {
		fprintf(out, "layer %zu/%zu %s: done, %s fetched in %s, %s already cached\n", i + 1, p->n, l->name,
			f, took, c);
	} else {
		fprintf(out, "layer %zu/%zu %s: done, %s fetched in %s\n", i + 1, p->n, l->name, f, took);
	}
}

/* Brings stderr up to date, unless it was less than a tick ago (and this
 * is not the last time: then the redrawn part goes for good). */
static void render(struct cli_progress *p, bool last)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&p->draw);
	if (!last && (p->drawn.tv_sec || p->drawn.tv_nsec) && seconds_since(&p->drawn, &now) < TICK_MS / 1000.0) {
		pthread_mutex_unlock(&p->draw);
		return; /* the next tick draws what changed */
	}
	p->drawn = now;
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	if (!out) {
		pthread_mutex_unlock(&p->draw);
		return;
	}
	bool tty = p->mode == CLI_PROGRESS_TTY;
	if (tty && p->live)
		fprintf(out, "\033[%uA\033[J", p->live); /* back over the last drawing */
	uint64_t all_done = 0, all_size = 0, all_fetched = 0;
	for (size_t i = 0; i < p->n; i++) {
		struct layer_progress *l = &p->layers[i];
		int st = atomic_load_explicit(&l->state, memory_order_acquire);
		uint64_t fetched, cached, done;
		figures(l, &fetched, &cached, &done);
		all_done += done;
		all_size += l->size;
		all_fetched += fetched;
		if (!tty && st != LAYER_WAITING && !l->announced && fetched) {
			char s[32];
			mlfs_format_size(l->size, s, sizeof s);
			fprintf(out, "layer %zu/%zu %s: fetching %s\n", i + 1, p->n, l->name, s);
			l->announced = true;
		}
		if (st == LAYER_DONE && !l->reported) {
			final_line(out, p, i);
			l->reported = true;
		}
	}
	unsigned live = 0;
	if (tty && !last) {
		unsigned cols = columns();
		for (size_t i = 0; i < p->n; i++) {
			struct layer_progress *l = &p->layers[i];
			if (atomic_load_explicit(&l->state, memory_order_acquire) != LAYER_ACTIVE)
				continue;
			uint64_t fetched, cached, done;
			figures(l, &fetched, &cached, &done);
			char label[64];
			snprintf(label, sizeof label, "layer %zu/%zu %.12s", i + 1, p->n, l->name + strlen("sha256:"));
			double secs = seconds_since(&l->begin, &now);
			live_line(out, cols, label, done, l->size, secs > 0 ? (double)fetched / secs : 0);
			live++;
		}
		double secs = seconds_since(&p->start, &now);
		live_line(out, cols, "total", all_done, all_size, secs > 0 ? (double)all_fetched / secs : 0);
		live++;
	}
	p->live = live;
	fclose(out);
	if (len) {
		fwrite(text, 1, len, stderr);
		fflush(stderr);
	}
	pthread_mutex_unlock(&p->draw);
	free(text);
}

static void *drawer(void *arg)
{
	struct cli_progress *p = arg;
	for (;;) {
		/* A tick after the last drawing, whoever drew it. */
		pthread_mutex_lock(&p->draw);
		struct timespec t = p->drawn;
		pthread_mutex_unlock(&p->draw);
		if (!t.tv_sec && !t.tv_nsec)
			clock_gettime(CLOCK_MONOTONIC, &t);
		t.tv_nsec += TICK_MS * 1000000L;
		if (t.tv_nsec >= 1000000000L) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&p->lock);
		while (!p->stop && pthread_cond_timedwait(&p->cond, &p->lock, &t) != ETIMEDOUT)
			;
		bool stop = p->stop;
		pthread_mutex_unlock(&p->lock);
		if (stop)
			return NULL;
		render(p, false);
	}
}

void cli_progress_start(struct cli_progress *p, const struct mlfs_image *img)
{
	if (!p)
		return;
	size_t n = img->manifest->n_layers;
	p->layers = calloc(n ? n : 1, sizeof *p->layers);
	p->canonical = strdup(img->canonical);
	if (!p->layers || !p->canonical)
		return; /* n stays 0: no layer is drawn */
	for (size_t i = 0; i < n; i++) {
		const struct mlfs_descriptor *d = &img->manifest->layers[i];
		p->layers[i].size = d->size > 0 ? (uint64_t)d->size : 0;
		snprintf(p->layers[i].name, sizeof p->layers[i].name, "%.19s", d->digest);
	}
	p->n = n;
	clock_gettime(CLOCK_MONOTONIC, &p->start);
	p->thread_running = pthread_create(&p->thread, NULL, drawer, p) == 0;
}

void cli_progress_layer_begin(struct cli_progress *p, size_t i)
{
	if (!p || i >= p->n)
		return;
	clock_gettime(CLOCK_MONOTONIC, &p->layers[i].begin);
	atomic_store_explicit(&p->layers[i].state, LAYER_ACTIVE, memory_order_release);
}

void cli_progress_layer_end(struct cli_progress *p, size_t i)
{
	if (!p || i >= p->n)
		return;
	clock_gettime(CLOCK_MONOTONIC, &p->layers[i].end);
	atomic_store_explicit(&p->layers[i].state, LAYER_DONE, memory_order_release);
	render(p, false); /* its final line now, unless a tick drew just now */
}

void cli_progress_finish(struct cli_progress *p, bool ok, const char *verb)
{
	if (!p)
		return;
	if (p->thread_running) {
		pthread_mutex_lock(&p->lock);
		p->stop = true;
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&p->lock);
		pthread_join(p->thread, NULL);
		p->thread_running = false;
	}
	render(p, true);
	if (!ok || !p->canonical)
		return;
	uint64_t fetched = 0, cached = 0;
	for (size_t i = 0; i < p->n; i++) {
		uint64_t f, c, d;
		figures(&p->layers[i], &f, &c, &d);
		fetched += f;
		cached += c;
	}
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	char f[32], c[32], took[32];
	mlfs_format_size(fetched, f, sizeof f);
	mlfs_format_size(cached, c, sizeof c);
	mlfs_format_elapsed(seconds_since(&p->start, &now), took, sizeof took);
	fprintf(stderr, "%s %s: %zu layer%s, %s fetched, %s already cached, in %s\n", verb, p->canonical, p->n,
		p->n == 1 ? "" : "s", f, c, took);
	fflush(stderr);
}

void cli_progress_free(struct cli_progress *p)
{
	if (!p)
		return;
	if (p->thread_running)
		cli_progress_finish(p, false, "");
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->draw);
	free(p->layers);
	free(p->canonical);
	free(p);
}
