#include "fs/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

int cli_parse_image_args(int argc, char **argv, unsigned flags, struct cli_image_args *out)
{
	enum { OPT_PLATFORM = 256, OPT_INSECURE, OPT_CACHE, OPT_JSON, OPT_FORMAT, OPT_OFFLINE };
	static const struct option longopts[] = {
		{ "platform", required_argument, NULL, OPT_PLATFORM },
		{ "insecure", no_argument, NULL, OPT_INSECURE },
		{ "offline", no_argument, NULL, OPT_OFFLINE },
		{ "cache", required_argument, NULL, OPT_CACHE },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "output", required_argument, NULL, 'o' },
		{ NULL, 0, NULL, 0 },
	};
	memset(out, 0, sizeof *out);
	optind = 1;
	opterr = 1;
	int c;
	while ((c = getopt_long(argc, argv, flags & CLI_OUTPUT ? "o:" : "", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_PLATFORM: out->opts.platform = optarg; break;
		case OPT_INSECURE: out->opts.insecure = true; break;
		case OPT_OFFLINE: out->opts.offline = true; break;
		case OPT_CACHE: out->opts.cache_dir = optarg; break;
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
	fprintf(stderr, "usage: mlfs %s REF [--platform OS/ARCH[/VARIANT]] [--insecure] [--offline] [--cache DIR]%s%s%s\n",
		argv[0], flags & CLI_JSON ? " [--json]" : "", flags & CLI_OUTPUT ? " [-o FILE]" : "",
		flags & CLI_FORMAT ? " [--format tar|mtree]" : "");
	return -EINVAL;
}

int cli_fail(const struct mlfs_err *err)
{
	fprintf(stderr, "mlfs: error: %s\n", err->msg[0] ? err->msg : strerror(err->code ? err->code : EIO));
	return 1;
}
