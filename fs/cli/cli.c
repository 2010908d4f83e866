#include "fs/cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fs/cli/units.h"
#include "layers/layers.h"

static void image_usage(FILE *f, const char *cmd, unsigned flags)
{
	fprintf(f, "usage: mlfs %s REF [--platform OS/ARCH[/VARIANT]] [--insecure] [--offline] [--cache DIR]"
		"%s%s%s%s%s [--policy FILE] [--insecure-policy] [--registries.d DIR] [--registries-conf FILE] [--debug[=AREAS]]\n",
		cmd, flags & CLI_JSON ? " [--json]" : "", flags & CLI_OUTPUT ? " [-o FILE]" : "",
		flags & CLI_FORMAT ? " [--format tar|mtree]" : "",
		flags & CLI_LAYERS ? " [--cache-max SIZE] [--keep-blobs]" : "",
		flags & CLI_PROGRESS ? " [-q|--quiet]" : "");
}

int cli_parse_image_args(int argc, char **argv, unsigned flags, struct cli_image_args *out)
{
	enum { OPT_PLATFORM = 256, OPT_INSECURE, OPT_CACHE, OPT_JSON, OPT_FORMAT, OPT_OFFLINE, OPT_CACHE_MAX,
	       OPT_KEEP_BLOBS, OPT_POLICY, OPT_INSECURE_POLICY, OPT_HELP, OPT_REGISTRIES_CONF, OPT_DEBUG,
	       OPT_REGISTRIES_D };
	static const struct option longopts[] = {
		{ "platform", required_argument, NULL, OPT_PLATFORM },
		{ "insecure", no_argument, NULL, OPT_INSECURE },
		{ "offline", no_argument, NULL, OPT_OFFLINE },
		{ "cache", required_argument, NULL, OPT_CACHE },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "output", required_argument, NULL, 'o' },
		{ "cache-max", required_argument, NULL, OPT_CACHE_MAX },
		{ "keep-blobs", no_argument, NULL, OPT_KEEP_BLOBS },
		{ "policy", required_argument, NULL, OPT_POLICY },
		{ "insecure-policy", no_argument, NULL, OPT_INSECURE_POLICY },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "quiet", no_argument, NULL, 'q' },
		{ "registries-conf", required_argument, NULL, OPT_REGISTRIES_CONF },
		{ "debug", optional_argument, NULL, OPT_DEBUG },
		{ "registries.d", required_argument, NULL, OPT_REGISTRIES_D },
		{ NULL, 0, NULL, 0 },
	};
	memset(out, 0, sizeof *out);
	const char *max = getenv("MLFS_CACHE_MAX");
	if (max && *max && cli_cache_max(max, "$MLFS_CACHE_MAX", &out->opts.cache_max) < 0)
		return -EINVAL;
	optind = 1;
	opterr = 1;
	int c;
	const char *shortopts = (flags & CLI_OUTPUT) && (flags & CLI_PROGRESS) ? "ho:q" :
				flags & CLI_OUTPUT ? "ho:" : flags & CLI_PROGRESS ? "hq" : "h";
	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
		case OPT_HELP:
			image_usage(stdout, argv[0], flags);
			printf("what each option does: man 1 mlfs\n");
			return 1;
		case OPT_PLATFORM: out->opts.platform = optarg; break;
		case OPT_INSECURE: out->opts.insecure = true; break;
		case OPT_OFFLINE: out->opts.offline = true; break;
		case OPT_CACHE: out->opts.cache_dir = optarg; break;
		case OPT_POLICY: out->opts.policy = optarg; break;
		case OPT_INSECURE_POLICY: out->opts.insecure_policy = true; break;
		case OPT_REGISTRIES_CONF: out->opts.registries_conf = optarg; break;
		case OPT_DEBUG: {
			/* The same as `mlfs --debug[=AREAS] COMMAND`, after the command:
			 * e.g. which endpoints were tried for a reference, and why. */
			unsigned areas = MLFS_AREA_ALL;
			if (optarg && mlfs_log_parse_areas(optarg, &areas) < 0) {
				fprintf(stderr, "mlfs: error: unknown debug area in \"%s\"\n", optarg);
				return -EINVAL;
			}
			mlfs_log_setup(MLFS_LOG_DEBUG, areas, false);
			break;
		}
		case OPT_REGISTRIES_D: out->opts.registries_d = optarg; break;
		case OPT_CACHE_MAX:
			if (!(flags & CLI_LAYERS))
				goto usage;
			if (cli_cache_max(optarg, "--cache-max", &out->opts.cache_max) < 0)
				return -EINVAL;
			break;
		case OPT_KEEP_BLOBS:
			if (!(flags & CLI_LAYERS))
				goto usage;
			out->opts.keep_blobs = true;
			break;
		case OPT_JSON:
			if (!(flags & CLI_JSON))
				goto usage;
			out->json = true;
			break;
		case OPT_FORMAT:
			if (!(flags & CLI_FORMAT))
				goto usage;
			out->format = optarg;
			break;
		case 'q':
			if (!(flags & CLI_PROGRESS))
				goto usage;
			out->quiet = true;
			break;
		case 'o':
			if (!(flags & CLI_OUTPUT))
				goto usage;
			out->output = optarg;
			break;
		default:
			goto usage;
		}
	}
	if (optind != argc - 1)
		goto usage;
	out->ref = argv[optind];
	return 0;
usage:
	image_usage(stderr, argv[0], flags);
	return -EINVAL;
}

int cli_fail(const struct mlfs_err *err)
{
	fprintf(stderr, "mlfs: error: %s\n", err->msg[0] ? err->msg : strerror(err->code ? err->code : EIO));
	return 1;
}

int cli_cache_max(const char *value, const char *what, uint64_t *out)
{
	int r = mlfs_parse_size(value, out);
	if (r < 0)
		fprintf(stderr, "mlfs: error: %s=%s: give a size such as 500M, 16G or 1.5GiB\n", what, value);
	return r;
}

void cli_cache_startup(const char *cache_option)
{
	char *dir = mlfs_cache_dir_default(cache_option);
	if (dir)
		(void)mlfs_cache_clean_temps(dir, NULL, NULL);
	free(dir);
}
