/* The mlfs subcommands and their shared command-line handling. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "fetch/fetch.h"

/* Options every image subcommand takes; parse with cli_parse_image_args(). */
struct cli_image_args {
	const char *ref;
	struct mlfs_image_opts opts;
	bool json;            /* --json (inspect) */
	const char *output;   /* -o FILE (export) */
	const char *format;   /* --format tar|mtree (export) */
	bool quiet;           /* -q, --quiet: no progress (pull, export) */
};

enum cli_flags {
	CLI_JSON = 1 << 0,
	CLI_OUTPUT = 1 << 1,
	CLI_FORMAT = 1 << 2,
	CLI_LAYERS = 1 << 3,  /* --cache-max SIZE, --keep-blobs: commands that fill the cache */
	CLI_PROGRESS = 1 << 4, /* -q, --quiet: commands that show progress */
};

/* Parses `CMD REF [--platform P] [--insecure] [--cache DIR] ...`, accepting
 * only the extra options named in `flags`.  Prints usage and returns -EINVAL
 * on a bad command line; prints it to stdout and returns 1 for --help. */
int cli_parse_image_args(int argc, char **argv, unsigned flags, struct cli_image_args *out);
/* A cache cap (SIZE) from `what` (an option or variable name, for the
 * error it prints): -EINVAL when malformed. */
int cli_cache_max(const char *value, const char *what, uint64_t *out);
/* What every command does first with the cache: removes temporary files
 * of runs that died (kill -9, a crash, an unmount mid-load). */
void cli_cache_startup(const char *cache_option);
/* Prints "mlfs: error: MSG" (one line) and returns the exit status 1. */
int cli_fail(const struct mlfs_err *err);

/* mlfs's version and the run-time versions of the libraries it uses. */
void cli_print_version(FILE *f);

int mlfs_cmd_inspect(int argc, char **argv);
int mlfs_cmd_pull(int argc, char **argv);
int mlfs_cmd_export(int argc, char **argv);
int mlfs_cmd_cache(int argc, char **argv);
int mlfs_cmd_chroot(int argc, char **argv);
int mlfs_cmd_version(int argc, char **argv);
int mlfs_cmd_stat(int argc, char **argv);
