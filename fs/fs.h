/* fs/: the FUSE side.  One struct mlfs_fs per mount, reached through
 * fuse_req_userdata(): the only per-process state outside main(). */
#pragma once
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <stdbool.h>

#include "fetch/fetch.h"
#include "fs/loader.h"
#include "fs/stats.h"

struct mlfs_fs {
	struct mlfs_image *img;
	struct loader *loader;
	bool prefetch;
	bool no_open;       /* set once in init, before any other request */
	bool no_opendir;
	bool all_seekable;  /* every layer has a TOC: loading starts at init */
	struct fuse_session *se; /* while the loop runs: waits end when it exits */
	bool stop_tried;    /* loader_stop() was called (once is enough: it waits its grace) */
	struct mlfs_stats stats; /* relaxed atomics, for mlfs stat */
};

extern const struct fuse_lowlevel_ops mlfs_ops;

int mlfs_cmd_mount(int argc, char **argv);
