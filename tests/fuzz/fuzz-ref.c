/* libFuzzer: reference and platform parsing, the two strings a user (or a
 * script fed from elsewhere) hands to mlfs.  Beyond not crashing, checks
 * that what is accepted is consistent: the canonical / formatted form is a
 * fixed point of parsing, and messages are one line. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/fetch.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
				#cond);                                                 \
			abort();                                                        \
		}                                                                       \
	} while (0)

static void check_err(const struct mlfs_err *err, int r)
{
	CHECK(r < 0);
	CHECK(err->code == -r);
	CHECK(memchr(err->msg, '\0', sizeof err->msg) != NULL);
	CHECK(strchr(err->msg, '\n') == NULL);
}

static void fuzz_ref(const char *s)
{
	struct mlfs_ref ref;
	struct mlfs_err err = { 0 };
	int r = mlfs_ref_parse(s, &ref, &err);
	if (r < 0) {
		check_err(&err, r);
		CHECK(!ref.domain && !ref.path && !ref.tag && !ref.digest);
		return;
	}
	CHECK(ref.domain && ref.path && (ref.tag || ref.digest));
	CHECK(mlfs_ref_api_host(&ref) != NULL);
	const char *reference = mlfs_ref_reference(&ref);
	CHECK(reference == (ref.digest ? ref.digest : ref.tag));
	CHECK(strlen(ref.domain) + 1 + strlen(ref.path) <= 255);

	char *canonical = mlfs_ref_canonical(&ref);
	CHECK(canonical);
	struct mlfs_ref again;
	r = mlfs_ref_parse(canonical, &again, &err);
	if (r < 0)
		fprintf(stderr, "canonical %s refused: %s\n", canonical, err.msg);
	CHECK(r == 0);
	char *canonical2 = mlfs_ref_canonical(&again);
	CHECK(canonical2 && !strcmp(canonical, canonical2));
	CHECK(!strcmp(ref.domain, again.domain) && !strcmp(ref.path, again.path));
	free(canonical2);
	free(canonical);
	mlfs_ref_clear(&again);
	mlfs_ref_clear(&ref);
}

static void fuzz_platform(const char *s)
{
	struct mlfs_platform p;
	struct mlfs_err err = { 0 };
	int r = mlfs_platform_parse(s, &p, &err);
	if (r < 0) {
		check_err(&err, r);
		return;
	}
	CHECK(p.os[0] && p.arch[0]);

	struct mlfs_platform q = p;
	mlfs_platform_normalize(&q);
	CHECK(!memcmp(&p, &q, sizeof p));
	CHECK(mlfs_platform_rank(&p, &p) == 0);

	char buf[200];
	mlfs_platform_format(&p, buf, sizeof buf);
	struct mlfs_platform again;
	r = mlfs_platform_parse(buf, &again, &err);
	if (r < 0)
		fprintf(stderr, "formatted %s refused: %s\n", buf, err.msg);
	CHECK(r == 0);
	CHECK(!strcmp(p.os, again.os) && !strcmp(p.arch, again.arch) &&
	      !strcmp(p.variant, again.variant) && !strcmp(p.os_version, again.os_version));
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	char *s = malloc(n + 1);
	if (!s)
		return 0;
	memcpy(s, d, n);
	s[n] = '\0';
	fuzz_ref(s);
	fuzz_platform(s);

	/* The host-detection parser reads /proc/cpuinfo text: feed it too. */
	struct mlfs_platform p;
	static const char *const machines[] = { "armv7l", "armv8l", "x86_64" };
	for (size_t i = 0; i < sizeof machines / sizeof machines[0]; i++)
		if (mlfs_platform_from_machine(machines[i], s, &p) == 0)
			CHECK(p.arch[0] && !strcmp(p.os, "linux"));
	free(s);
	return 0;
}
