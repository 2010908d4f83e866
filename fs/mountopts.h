/* mount.mlfs's command line, as mount(8) and fstab hand it over. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"

struct mount_opts {
	const char *ref;
	const char *mountpoint;
	char *platform;
	char *cache_dir;
	bool insecure;
	bool offline;
	bool prefetch;
	unsigned jobs;          /* parallel layer fetches; 0: default */
	unsigned timeout_s;     /* how long a request waits for layer data */
	bool allow_other;
	bool suid;
	bool dev;
	bool foreground;
	bool debug;
	char *debug_areas;      /* debug=fetch,layers: implies debug */
	uint64_t cache_max;     /* cache-max=SIZE (else $MLFS_CACHE_MAX); 0: no cap */
	bool keep_blobs;        /* keep-blobs: compressed blobs stay after indexing */
	char *policy;           /* policy=FILE: the containers-policy.json to enforce */
	bool insecure_policy;   /* insecure-policy: no policy check */
	char *registries_conf;  /* registries-conf=FILE: the registries.conf to read (mirrors) */
	char *registries_d;     /* registries.d=DIR: where signatures are stored (registries.d(5)) */
};

#define MOUNT_DEFAULT_JOBS 4
#define MOUNT_DEFAULT_TIMEOUT_S 300

/* Parses `SPEC DIR [-o opts]... [-f] [-d] [-n] [-s] [-v]` (argv[0] is the
 * command name).  Options mount(8) and fstab add that mean nothing here
 * (defaults, noauto, _netdev, x-*, rw, ...) are accepted and ignored;
 * unknown ones are errors. */
int mount_opts_parse(int argc, char **argv, struct mount_opts *out, struct mlfs_err *err);
void mount_opts_clear(struct mount_opts *o);
/* mount.mlfs --help: the command lines and every -o option. */
void mount_opts_usage(FILE *f);
