/* mlfs: subcommand dispatch.  Installed also as mount.mlfs, mount(8)'s
 * helper name, which the argv[0] check routes to the mount command. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <curl/curl.h>

#include "common/log.h"
#include "fs/cli.h"
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
};

static int usage(FILE *f)
{
	fprintf(f, "usage: mlfs [--debug[=AREAS]] COMMAND REF [options]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\nAREAS: all, or a comma-separated list of main, fetch, auth, layers, fs\n");
	return f == stderr ? 2 : 0;
}

int main(int argc, char **argv)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	/* Writes to a closed pipe or socket must fail with EPIPE, not kill us
	 * (layer streaming, `export | head`). */
	signal(SIGPIPE, SIG_IGN);
	const char *base = strrchr(argv[0], '/');
	base = base ? base + 1 : argv[0];
	if (!strcmp(base, "mount.mlfs"))
		return mlfs_cmd_mount(argc, argv);

	unsigned areas = 0;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return usage(stdout);
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
