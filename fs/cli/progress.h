/* Progress of the layers a command fetches (pull, export), on stderr. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "fetch/fetch.h"

enum cli_progress_mode {
	CLI_PROGRESS_QUIET,  /* --quiet, or $MLFS_QUIET: nothing but errors */
	CLI_PROGRESS_LINES,  /* stderr is not a terminal (or TERM=dumb): a line when a layer starts and when it ends */
	CLI_PROGRESS_TTY,    /* a terminal: layer and total lines redrawn in place */
};

/* The mode for this process: quiet (the -q of the command line) wins,
 * then a non-empty $MLFS_QUIET other than "0", then whether stderr is a
 * terminal that can move its cursor (not TERM=dumb). */
enum cli_progress_mode cli_progress_mode(bool quiet);

struct cli_progress;

/* Created before the image is opened: its listener goes into the image's
 * options (opts->progress, opts->progress_priv).  NULL when out of memory
 * (the command then runs without progress). */
struct cli_progress *cli_progress_new(enum cli_progress_mode mode, struct mlfs_image_opts *opts);
/* Once the image is resolved: its layers, and the start of the clock and
 * of the redraws. */
void cli_progress_start(struct cli_progress *p, const struct mlfs_image *img);
/* Layer i (0 = bottom) is being fetched / is ready. */
void cli_progress_layer_begin(struct cli_progress *p, size_t i);
void cli_progress_layer_end(struct cli_progress *p, size_t i);
/* Stops the redraws; on success prints the summary line ("VERB REF: N
 * layers, X fetched, Y already cached, T"); on failure leaves the line
 * to the error message. */
void cli_progress_finish(struct cli_progress *p, bool ok, const char *verb);
void cli_progress_free(struct cli_progress *p);
