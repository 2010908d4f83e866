/* The mlfs subcommands and their shared command-line handling. */
#pragma once
#include <stdbool.h>

#include "fetch/fetch.h"

/* Options every image subcommand takes; parse with cli_parse_image_args(). */
struct cli_image_args {
	const char *ref;
	struct mlfs_image_opts opts;
	bool json;            /* --json (inspect) */
	const char *output;   /* -o FILE (export) */
	const char *format;   /* --format tar|mtree (export) */
};

enum cli_flags {
	CLI_JSON = 1 << 0,
	CLI_OUTPUT = 1 << 1,
	CLI_FORMAT = 1 << 2,
};

/* Parses `CMD REF [--platform P] [--insecure] [--cache DIR] ...`, accepting
 * only the extra options named in `flags`.  Prints usage and returns -EINVAL
 * on a bad command line. */
int cli_parse_image_args(int argc, char **argv, unsigned flags, struct cli_image_args *out);
/* Prints "mlfs: error: MSG" (one line) and returns the exit status 1. */
int cli_fail(const struct mlfs_err *err);

int mlfs_cmd_inspect(int argc, char **argv);
int mlfs_cmd_pull(int argc, char **argv);
int mlfs_cmd_export(int argc, char **argv);
