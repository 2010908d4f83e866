/* mlfs version / --version: mlfs's own version and those of the libraries
 * it runs with.  Each library is asked at run time, not its header at
 * build time: a bug report needs what was loaded, and a distribution
 * update (libcurl, OpenSSL) changes that without rebuilding mlfs. */
#include "fs/cli/cli.h"

#include <stdio.h>
#include <string.h>
#include <archive.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <zstd.h>

#include "fs/fs.h"
#include "fs/version.h"
#include "fetch/fetch.h"

void cli_print_version(FILE *f)
{
	fprintf(f, "mlfs %s\n", MLFS_VERSION);
	fprintf(f, "libfuse %s\n", fuse_pkgversion());
	const curl_version_info_data *curl = curl_version_info(CURLVERSION_NOW);
	fprintf(f, "libcurl %s (%s)\n", curl->version, curl->ssl_version ? curl->ssl_version : "no TLS");
	fprintf(f, "jansson %s\n", jansson_version_str());
	/* "libarchive 3.6.2 zlib/1.2.13 liblzma/5.4.1 ...": the decompressors
	 * it was built with decide which layers it can read. */
	const char *la = archive_version_details();
	const char *sp = strchr(la, ' ');
	const char *rest = sp ? strchr(sp + 1, ' ') : NULL;
	if (sp && rest)
		fprintf(f, "libarchive %.*s (%s)\n", (int)(rest - sp - 1), sp + 1, rest + 1);
	else
		fprintf(f, "libarchive %s\n", sp ? sp + 1 : la);
	fprintf(f, "zstd %s\n", ZSTD_versionString());
	fprintf(f, "OpenSSL %s\n", OpenSSL_version(OPENSSL_VERSION_STRING));
	fprintf(f, "libyaml %s\n", mlfs_yaml_version());
	const char *gpgme = mlfs_gpg_version();
	fprintf(f, "gpgme %s\n", gpgme ? gpgme : "none (built without OpenPGP support: signedBy policies refuse)");
}

int mlfs_cmd_version(int argc, char **argv)
{
	if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		printf("usage: mlfs version\n       mlfs --version\n");
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "usage: mlfs version\n");
		return 2;
	}
	cli_print_version(stdout);
	return 0;
}
