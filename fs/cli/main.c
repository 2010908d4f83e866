/* mlfs: subcommand dispatch.  Installed also as mount.mlfs, mount(8)'s
 * helper name, which the argv[0] check routes to the mount command. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <curl/curl.h>

#include "common/log.h"
#include "fs/cli/cli.h"
#include "fs/fs.h"

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
} commands[] = {
	{ "inspect", mlfs_cmd_inspect, "show an image's platforms, manifest, config and layers" },
	{ "pull", mlfs_cmd_pull, "download an image's layers into the cache" },
	{ "export", mlfs_cmd_export, "write an image's merged root filesystem as tar or mtree" },
	{ "mount", mlfs_cmd_mount, "mount an image read-only (as mount.mlfs REF DIR -o ...)" },
	{ "cache", mlfs_cmd_cache, "list, measure, evict, remove and verify what the cache holds" },
	{ "chroot", mlfs_cmd_chroot, "run a command in a writable, disposable chroot of an image" },
	{ "version", mlfs_cmd_version, "print mlfs's version and those of the libraries it runs with" },
	{ "stat", mlfs_cmd_stat, "a live mount's statistics: mlfs stat DIR [--json]" },
};

static int usage(FILE *f)
{
	fprintf(f, "usage: mlfs [--debug[=AREAS]] COMMAND REF [options]\n"
		"       mlfs COMMAND --help\n"
		"       mlfs --version\n\ncommands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n"
		"cache commands (each takes --cache DIR):\n"
		"  cache ls [--json]          images: reference, platform, digest, layers, bytes, last use, in use\n"
		"  cache du [--json]          bytes on disk by kind (data, index, chunks, blobs, partial, temp, meta)\n"
		"  cache gc [--max SIZE] [--older-than DURATION]\n"
		"                             remove leftovers of interrupted runs, layers unused for DURATION,\n"
		"                             then the least recently used until the cache fits in SIZE\n"
		"  cache rm REF...            remove images' layers that no other cached image has\n"
		"  cache verify               re-check every index, data file and blob; remove what is broken\n"
		"\npull and export also take --cache-max SIZE (evict least recently used layers to stay\n"
		"under SIZE) and --keep-blobs (keep compressed blobs after indexing); mounts take\n"
		"-o cache-max=SIZE,keep-blobs.  $MLFS_CACHE_MAX sets the cap for every command.\n"
		"SIZE: 500M, 16G, 1.5GiB (powers of 1024); DURATION: 90m, 12h, 30d, 2w.\n"
		"\npull and export show their progress on stderr (redrawn on a terminal, a line per\n"
		"layer otherwise) and end with a summary; -q, --quiet (or $MLFS_QUIET=1): none.\n"
		"\nAREAS: all, or a comma-separated list of main, fetch, auth, layers, fs\n");
	return f == stderr ? 2 : 0;
}

int main(int argc, char **argv)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	/* Writes to a closed pipe or socket must fail with EPIPE, not kill us
	 * (layer streaming, `export | head`). */
	signal(SIGPIPE, SIG_IGN);
	/* Every open layer holds its data file open (and locked against
	 * eviction): an image of thousands of layers needs more than the
	 * usual soft limit of 1024 descriptors. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	const char *base = strrchr(argv[0], '/');
	base = base ? base + 1 : argv[0];
	if (!strcmp(base, "mount.mlfs"))
		return mlfs_cmd_mount(argc, argv);

	unsigned areas = 0;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return usage(stdout);
		if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
			cli_print_version(stdout);
			return 0;
		}
		if (!strcmp(argv[i], "-d") || !strcmp(argv[i], "--debug")) {
			areas = MLFS_AREA_ALL;
		} else if (!strncmp(argv[i], "--debug=", 8)) {
			if (mlfs_log_parse_areas(argv[i] + 8, &areas) < 0) {
				fprintf(stderr, "mlfs: error: unknown debug area in \"%s\"\n", argv[i] + 8);
				return 2;
			}
		} else {
			return usage(stderr);
		}
	}
	mlfs_log_setup(areas ? MLFS_LOG_DEBUG : MLFS_LOG_WARN, areas, false);
	if (i >= argc)
		return usage(stderr);
	for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++)
		if (!strcmp(argv[i], commands[c].name))
			return commands[c].run(argc - i, argv + i);
	fprintf(stderr, "mlfs: error: unknown command \"%s\"\n", argv[i]);
	return usage(stderr);
}
