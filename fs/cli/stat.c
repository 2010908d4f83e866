/* mlfs stat DIR [--json]: a live mount's statistics, read from the
 * virtual xattr its daemon answers on the root (fs/stats.c says why an
 * xattr).  No privilege is needed beyond reading DIR, and nothing is
 * loaded by asking. */
#include "fs/cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/xattr.h>
#include <jansson.h>

#include "common/cleanup.h"
#include "fs/cli/units.h"
#include "fs/stats.h"

#define STATS_MAX (64 << 10)

struct mount_stats {
	int version;
	const char *reference, *platform, *manifest;
	json_int_t pid;
	int ready;
	json_int_t layers_total, layers_loaded, layers_from_cache;
	json_int_t bytes_fetched, bytes_reused, bytes_served, reads;
	json_int_t chunks_total, chunks_present, chunks_fetched, chunk_requests;
	const char *last_error;          /* NULL when none */
	json_int_t last_error_time;
};

/* The attribute's text, type-checked: it may come from anything that
 * answers getxattr with that name. */
static int decode(json_t *o, struct mount_stats *s)
{
	json_error_t je;
	json_t *err_text = NULL, *err_time = NULL;
	memset(s, 0, sizeof *s);
	if (json_unpack_ex(o, &je, 0, "{s:i}", "version", &s->version) < 0)
		return -EPROTO;
	if (s->version != 1)
		return -EPROTONOSUPPORT;
	if (json_unpack_ex(o, &je, 0,
			   "{s:i, s:s, s:s, s:s, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
			   "s:o, s:o}",
			   "version", &s->version, "reference", &s->reference, "platform", &s->platform,
			   "manifest", &s->manifest, "pid", &s->pid, "ready", &s->ready,
			   "layers_total", &s->layers_total, "layers_loaded", &s->layers_loaded,
			   "layers_from_cache", &s->layers_from_cache, "bytes_fetched", &s->bytes_fetched,
			   "bytes_reused", &s->bytes_reused, "bytes_served", &s->bytes_served, "reads", &s->reads,
			   "chunks_total", &s->chunks_total, "chunks_present", &s->chunks_present,
			   "chunks_fetched", &s->chunks_fetched, "chunk_requests", &s->chunk_requests,
			   "last_error", &err_text, "last_error_time", &err_time) < 0)
		return -EPROTO;
	if (json_is_string(err_text))
		s->last_error = json_string_value(err_text);
	if (json_is_integer(err_time))
		s->last_error_time = json_integer_value(err_time);
	return 0;
}

static const char *size_of(json_int_t v, char *buf, size_t len)
{
	mlfs_format_size(v > 0 ? (uint64_t)v : 0, buf, len);
	return buf;
}

static void print_table(const struct mount_stats *s)
{
	char a[32], b[32];
	printf("%-12s %s\n", "reference", s->reference);
	printf("%-12s %s\n", "platform", s->platform);
	printf("%-12s %s\n", "manifest", s->manifest);
	printf("%-12s %" JSON_INTEGER_FORMAT "\n", "daemon pid", s->pid);
	printf("%-12s %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT " loaded (%" JSON_INTEGER_FORMAT
	       " from the cache), tree %s\n", "layers", s->layers_loaded, s->layers_total, s->layers_from_cache,
	       s->ready ? "ready" : "not merged yet");
	printf("%-12s %s from the registry, %s reused from the cache\n", "fetched",
	       size_of(s->bytes_fetched, a, sizeof a), size_of(s->bytes_reused, b, sizeof b));
	printf("%-12s %s in %" JSON_INTEGER_FORMAT " reads\n", "served", size_of(s->bytes_served, a, sizeof a),
	       s->reads);
	if (s->chunks_total)
		printf("%-12s %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT " present, %" JSON_INTEGER_FORMAT
		       " fetched by this mount in %" JSON_INTEGER_FORMAT " requests\n", "chunks",
		       s->chunks_present, s->chunks_total, s->chunks_fetched, s->chunk_requests);
	if (!s->last_error) {
		printf("%-12s none\n", "last error");
		return;
	}
	char when[64] = "";
	time_t t = (time_t)s->last_error_time;
	struct tm tm;
	if (localtime_r(&t, &tm))
		strftime(when, sizeof when, " (%Y-%m-%d %H:%M:%S)", &tm);
	printf("%-12s %s%s\n", "last error", s->last_error, when);
}

static int show(const char *dir, bool json)
{
	_cleanup_free_ char *buf = malloc(STATS_MAX + 1);
	if (!buf) {
		fprintf(stderr, "mlfs: error: out of memory\n");
		return 1;
	}
	/* One call with room to spare, no size query first: the value grows
	 * between two calls. */
	ssize_t n = getxattr(dir, MLFS_STATS_XATTR, buf, STATS_MAX);
	if (n < 0 && (errno == ENODATA || errno == ENOTSUP)) {
		fprintf(stderr, "mlfs: error: %s is not the root of an mlfs mount (it has no %s attribute)\n", dir,
			MLFS_STATS_XATTR);
		return 1;
	}
	if (n < 0) {
		fprintf(stderr, "mlfs: error: cannot read the statistics of %s: %s\n", dir, strerror(errno));
		return 1;
	}
	buf[n] = '\0';
	json_error_t je;
	json_t *o = json_loadb(buf, (size_t)n, 0, &je);
	struct mount_stats s;
	int r = o ? decode(o, &s) : -EPROTO;
	if (r == -EPROTONOSUPPORT)
		fprintf(stderr, "mlfs: error: %s is served by another version of mlfs (statistics version %d; "
			"this mlfs reads 1): use that version's mlfs stat\n", dir, s.version);
	else if (r < 0)
		fprintf(stderr, "mlfs: error: %s: its %s attribute is not mlfs statistics (is this an mlfs "
			"mount?)\n", dir, MLFS_STATS_XATTR);
	if (r < 0) {
		json_decref(o);
		return 1;
	}
	if (json) {
		json_dumpf(o, stdout, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
		putchar('\n');
	} else {
		print_table(&s);
	}
	json_decref(o);
	return fflush(stdout) == 0 ? 0 : 1;
}

int mlfs_cmd_stat(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool json = false;
	optind = 1;
	opterr = 1;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h') {
			printf("usage: mlfs stat DIR [--json]\nwhat each option does: man 1 mlfs\n");
			return 0;
		}
		if (c != 'j')
			goto usage;
		json = true;
	}
	if (optind != argc - 1)
		goto usage;
	return show(argv[optind], json);
usage:
	fprintf(stderr, "usage: mlfs stat DIR [--json]\n");
	return 2;
}
