/* fs/units.c: sizes and durations as people type them, sizes as people read
 * them; and the mount options built on them (cache-max=SIZE, keep-blobs,
 * $MLFS_CACHE_MAX) in fs/mountopts.c. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/mountopts.h"
#include "fs/cli/units.h"
#include "tap.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)
#define TiB (1024ull * GiB)

static void size_ok(const char *s, uint64_t want)
{
	uint64_t got = 0xdeadbeef;
	int r = mlfs_parse_size(s, &got);
	tap_ok(r == 0 && got == want, "size \"%s\" = %llu", s, (unsigned long long)want);
	if (r != 0 || got != want)
		tap_diag("got rc %d, value %llu", r, (unsigned long long)got);
}

static void size_bad(const char *s, int want_rc)
{
	uint64_t got = 12345;
	int r = mlfs_parse_size(s, &got);
	tap_ok(r == want_rc && got == 12345, "size \"%s\" refused with %s, output untouched", s ? s : "(null)",
	       strerror(-want_rc));
	if (r != want_rc || got != 12345)
		tap_diag("got rc %d, value %llu", r, (unsigned long long)got);
}

static void duration_ok(const char *s, int64_t want)
{
	int64_t got = -7;
	int r = mlfs_parse_duration(s, &got);
	tap_ok(r == 0 && got == want, "duration \"%s\" = %lld s", s, (long long)want);
	if (r != 0 || got != want)
		tap_diag("got rc %d, value %lld", r, (long long)got);
}

static void duration_bad(const char *s, int want_rc)
{
	int64_t got = -7;
	int r = mlfs_parse_duration(s, &got);
	tap_ok(r == want_rc && got == -7, "duration \"%s\" refused with %s, output untouched",
	       s ? s : "(null)", strerror(-want_rc));
	if (r != want_rc || got != -7)
		tap_diag("got rc %d, value %lld", r, (long long)got);
}

static void format_is(uint64_t bytes, const char *want)
{
	char buf[32];
	memset(buf, 'X', sizeof buf);
	mlfs_format_size(bytes, buf, sizeof buf);
	tap_ok(memchr(buf, '\0', sizeof buf) && !strcmp(buf, want), "format %llu = \"%s\"",
	       (unsigned long long)bytes, want);
	if (!memchr(buf, '\0', sizeof buf) || strcmp(buf, want))
		tap_diag("got \"%.*s\"", (int)sizeof buf, buf);
}

static int parse(struct mount_opts *o, struct mlfs_err *err, int argc, char **argv)
{
	mlfs_err_clear(err);
	return mount_opts_parse(argc, argv, o, err);
}

static void sizes(void)
{
	size_ok("0", 0);
	size_ok("1", 1);
	size_ok("1073741824", GiB);
	/* Binary whatever the spelling, any case. */
	size_ok("1K", KiB);
	size_ok("1k", KiB);
	size_ok("1KB", KiB);
	size_ok("1kb", KiB);
	size_ok("1KiB", KiB);
	size_ok("1kib", KiB);
	size_ok("1B", 1);
	size_ok("7b", 7);
	size_ok("500mb", 500 * MiB);
	size_ok("500MiB", 500 * MiB);
	size_ok("16G", 16 * GiB);
	size_ok("16gb", 16 * GiB);
	size_ok("1.5G", GiB + GiB / 2);
	size_ok("1.5GiB", GiB + GiB / 2);
	size_ok("0.5K", 512);
	size_ok("1T", TiB);
	size_ok("2TiB", 2 * TiB);
	size_ok("0G", 0);
	/* The largest count of whole units below 2^64. */
	size_ok("16777215T", 16777215ull * TiB);
	size_ok("17179869183G", 17179869183ull * GiB);

	size_bad(NULL, -EINVAL);
	size_bad("", -EINVAL);
	size_bad("G", -EINVAL);
	size_bad("KiB", -EINVAL);
	size_bad("-1", -EINVAL);
	size_bad("+1", -EINVAL);
	size_bad(".5G", -EINVAL);
	size_bad("1X", -EINVAL);
	size_bad("1Gi", -EINVAL);
	size_bad("1GG", -EINVAL);
	size_bad("1P", -EINVAL);
	size_bad("1 G", -EINVAL);
	size_bad(" 1", -EINVAL);
	size_bad("1G ", -EINVAL);
	size_bad("1,5G", -EINVAL);
	size_bad("inf", -EINVAL);
	size_bad("nan", -EINVAL);
	size_bad("0x", -EINVAL);
	/* At and past 2^64. */
	size_bad("18446744073709551616", -ERANGE);
	size_bad("16777216T", -ERANGE);
	size_bad("17179869184G", -ERANGE);
	size_bad("16384PiB", -EINVAL); /* no such unit, however large */
	{
		/* strtod overflows: refused, whichever code. */
		uint64_t got = 1;
		int r = mlfs_parse_size("1e400", &got);
		tap_ok(r < 0 && got == 1, "size \"1e400\" refused (rc %d)", r);
	}
	/* BUG (fs/units.c, mlfs_parse_size): the header promises -ERANGE for a
	 * size beyond 2^64, but a decimal count from 1e30 up is refused as
	 * malformed (the `v < 1e30` guard returns -EINVAL). */
	size_bad("1000000000000000000000000000000", -ERANGE);
	/* BUG (fs/units.c, mlfs_parse_size): the count goes through a double,
	 * so an exact byte count above 2^53 is rounded, and 2^64 - 1 (which
	 * fits) rounds up to 2^64 and is refused with -ERANGE. */
	size_ok("9007199254740993", 9007199254740993ull);
	size_ok("18446744073709551615", UINT64_MAX);
}

static void durations(void)
{
	duration_ok("0", 0);
	duration_ok("90", 90);
	duration_ok("90s", 90);
	duration_ok("15m", 15 * 60);
	duration_ok("15min", 15 * 60);
	duration_ok("12h", 12 * 3600);
	duration_ok("30d", 30 * 86400);
	duration_ok("2w", 2 * 7 * 86400);
	duration_ok("007s", 7);
	duration_ok("9223372036854775807", INT64_MAX);
	duration_ok("106751991167300d", 106751991167300ll * 86400);
	duration_ok("15250284452471w", 15250284452471ll * 7 * 86400);

	duration_bad(NULL, -EINVAL);
	duration_bad("", -EINVAL);
	duration_bad("d", -EINVAL);
	duration_bad("s", -EINVAL);
	duration_bad("-1", -EINVAL);
	duration_bad("+1", -EINVAL);
	duration_bad(" 1", -EINVAL);
	duration_bad("1 h", -EINVAL);
	duration_bad("1h ", -EINVAL);
	duration_bad("1y", -EINVAL);
	duration_bad("1.5h", -EINVAL);
	duration_bad("1h30m", -EINVAL);
	duration_bad("15M", -EINVAL); /* months or minutes: neither, it is case-sensitive */
	duration_bad("2W", -EINVAL);
	duration_bad("1mins", -EINVAL);
	duration_bad("0x10", -EINVAL);
	/* Overflow: of the count itself, and of count times unit. */
	duration_bad("18446744073709551616", -ERANGE);
	duration_bad("99999999999999999999999d", -ERANGE);
	duration_bad("9223372036854775808", -ERANGE);
	duration_bad("9223372036854775808s", -ERANGE);
	duration_bad("153722867280912931m", -ERANGE);
	duration_bad("106751991167301d", -ERANGE);
	duration_bad("15250284452472w", -ERANGE);
}

static void formats(void)
{
	format_is(0, "0 B");
	format_is(1, "1 B");
	format_is(1023, "1023 B");
	format_is(1024, "1.0 KiB");
	format_is(1536, "1.5 KiB");
	format_is(MiB + MiB / 2, "1.5 MiB");
	format_is(500 * MiB, "500.0 MiB");
	format_is(16 * GiB, "16.0 GiB");
	format_is(TiB, "1.0 TiB");
	format_is(1024 * TiB, "1.0 PiB");
	format_is(UINT64_MAX, "16.0 EiB");
	{
		/* A short buffer is cut, never overrun. */
		char buf[8];
		memset(buf, 'X', sizeof buf);
		mlfs_format_size(1536, buf, 5);
		tap_ok(!strcmp(buf, "1.5 ") && buf[5] == 'X', "format into 5 bytes: cut, terminated, no overrun");
	}
	/* BUG (fs/units.c, mlfs_format_size): the unit is chosen before the
	 * value is rounded to one decimal, so just under a unit boundary prints
	 * "1024.0 KiB" (1048575 bytes) instead of moving up to "1.0 MiB". */
	format_is(MiB - 1, "1.0 MiB");
}

static void text_is(const char *got, const char *want, const char *what)
{
	tap_ok(!strcmp(got, want), "%s = \"%s\"", what, want);
	if (strcmp(got, want))
		tap_diag("got \"%s\"", got);
}

/* Rates and times of the progress lines of pull and export. */
static void progress_formats(void)
{
	char buf[32];
	mlfs_format_rate(0, buf, sizeof buf);
	text_is(buf, "0 B/s", "rate 0");
	mlfs_format_rate(-5, buf, sizeof buf);
	text_is(buf, "0 B/s", "a negative rate (a clock step) reads 0");
	mlfs_format_rate(1.0 / 0.0, buf, sizeof buf);
	text_is(buf, "0 B/s", "an infinite rate (no time elapsed) reads 0");
	mlfs_format_rate(8.1 * MiB, buf, sizeof buf);
	text_is(buf, "8.1 MiB/s", "rate 8.1 MiB/s");
	mlfs_format_rate(999.9, buf, sizeof buf);
	text_is(buf, "999 B/s", "rate under 1 KiB/s: whole bytes");

	mlfs_format_eta(0, buf, sizeof buf);
	text_is(buf, "0s", "eta 0");
	mlfs_format_eta(0.2, buf, sizeof buf);
	text_is(buf, "1s", "eta 0.2 s rounds up: never 0s while bytes are left");
	mlfs_format_eta(59.0, buf, sizeof buf);
	text_is(buf, "59s", "eta 59 s");
	mlfs_format_eta(59.5, buf, sizeof buf);
	text_is(buf, "1m00s", "eta 59.5 s");
	mlfs_format_eta(65, buf, sizeof buf);
	text_is(buf, "1m05s", "eta 65 s");
	mlfs_format_eta(7380, buf, sizeof buf);
	text_is(buf, "2h03m", "eta 2 h 3 min");
	mlfs_format_eta(100 * 3600.0, buf, sizeof buf);
	text_is(buf, "--", "eta beyond 99 h: unknown");
	mlfs_format_eta(-1, buf, sizeof buf);
	text_is(buf, "--", "negative eta: unknown");
	mlfs_format_eta(0.0 / 0.0, buf, sizeof buf);
	text_is(buf, "--", "eta NaN (0 bytes in 0 s): unknown");
	mlfs_format_eta(1.0 / 0.0, buf, sizeof buf);
	text_is(buf, "--", "eta infinite (rate 0): unknown");

	mlfs_format_elapsed(0.04, buf, sizeof buf);
	text_is(buf, "0.0 s", "elapsed 0.04 s");
	mlfs_format_elapsed(12.34, buf, sizeof buf);
	text_is(buf, "12.3 s", "elapsed 12.34 s");
	mlfs_format_elapsed(59.96, buf, sizeof buf);
	text_is(buf, "1m00s", "elapsed 59.96 s: not \"60.0 s\"");
	mlfs_format_elapsed(125.4, buf, sizeof buf);
	text_is(buf, "2m05s", "elapsed 125.4 s");
	mlfs_format_elapsed(-3, buf, sizeof buf);
	text_is(buf, "0.0 s", "negative elapsed reads 0");
	{
		char small[8];
		memset(small, 'X', sizeof small);
		mlfs_format_eta(7380, small, 4);
		tap_ok(!strcmp(small, "2h0") && small[4] == 'X', "eta into 4 bytes: cut, terminated, no overrun");
	}
}

static void mount_options(void)
{
	struct mount_opts o;
	struct mlfs_err err;
	unsetenv("MLFS_CACHE_MAX");
	{
		char *a[] = { "mount.mlfs", "r", "/m", NULL };
		tap_is_int(parse(&o, &err, 3, a), 0, "no cache options");
		tap_ok(o.cache_max == 0 && !o.keep_blobs, "defaults: no cap, blobs dropped");
		mount_opts_clear(&o);
	}
	{
		char *a[] = { "mount.mlfs", "r", "/m", "-o", "ro,cache-max=16G,keep-blobs,jobs=2", NULL };
		tap_is_int(parse(&o, &err, 5, a), 0, "cache-max=16G,keep-blobs");
		tap_is_int((long long)o.cache_max, (long long)(16 * GiB), "cache-max=16G in bytes");
		tap_ok(o.keep_blobs, "keep-blobs set");
		tap_is_int(o.jobs, 2, "the options after them still parsed");
		mount_opts_clear(&o);
	}
	{
		char *a[] = { "mount.mlfs", "-ocache-max=1.5GiB", "r", "/m", NULL };
		tap_is_int(parse(&o, &err, 4, a), 0, "-ocache-max= glued");
		tap_is_int((long long)o.cache_max, (long long)(GiB + GiB / 2), "cache-max=1.5GiB");
		mount_opts_clear(&o);
	}
	{
		char *a[] = { "mount.mlfs", "r", "/m", "-o", "cache-max=0", NULL };
		tap_is_int(parse(&o, &err, 5, a), 0, "cache-max=0");
		tap_is_int((long long)o.cache_max, 0, "cache-max=0: no cap");
		mount_opts_clear(&o);
	}
	{
		char *a[] = { "mount.mlfs", "r", "/m", "-o", "cache-max=1G", "-o", "cache-max=500mb", NULL };
		tap_is_int(parse(&o, &err, 7, a), 0, "cache-max twice");
		tap_is_int((long long)o.cache_max, (long long)(500 * MiB), "the last cache-max wins");
		mount_opts_clear(&o);
	}
	/* $MLFS_CACHE_MAX: the default, under the option. */
	setenv("MLFS_CACHE_MAX", "2G", 1);
	{
		char *a[] = { "mount.mlfs", "r", "/m", NULL };
		tap_is_int(parse(&o, &err, 3, a), 0, "MLFS_CACHE_MAX=2G");
		tap_is_int((long long)o.cache_max, (long long)(2 * GiB), "cap from the environment");
		mount_opts_clear(&o);
		char *b[] = { "mount.mlfs", "r", "/m", "-o", "cache-max=3G", NULL };
		tap_is_int(parse(&o, &err, 5, b), 0, "MLFS_CACHE_MAX and cache-max=");
		tap_is_int((long long)o.cache_max, (long long)(3 * GiB), "the option overrides the environment");
		mount_opts_clear(&o);
	}
	setenv("MLFS_CACHE_MAX", "", 1);
	{
		char *a[] = { "mount.mlfs", "r", "/m", NULL };
		tap_ok(parse(&o, &err, 3, a) == 0 && o.cache_max == 0, "MLFS_CACHE_MAX empty: no cap");
		mount_opts_clear(&o);
	}
	setenv("MLFS_CACHE_MAX", "lots", 1);
	{
		char *a[] = { "mount.mlfs", "r", "/m", NULL };
		int r = parse(&o, &err, 3, a);
		tap_ok(r == -EINVAL && strstr(err.msg, "MLFS_CACHE_MAX") && strstr(err.msg, "lots"),
		       "MLFS_CACHE_MAX=lots refused: %s", err.msg);
	}
	unsetenv("MLFS_CACHE_MAX");

	const char *bad_sizes[] = { "cache-max=", "cache-max=G", "cache-max=-1", "cache-max=1X", "cache-max=1 G",
				    "cache-max=18446744073709551616", "cache-max=16 G", NULL };
	for (const char **b = bad_sizes; *b; b++) {
		char *a[] = { "mount.mlfs", "r", "/m", "-o", (char *)*b, NULL };
		int r = parse(&o, &err, 5, a);
		tap_ok(r == -EINVAL && strstr(err.msg, "cache-max"), "-o %s refused, naming cache-max: %s", *b,
		       err.msg);
	}
	const char *bad[] = { "cache-max", "keep-blobs=1", "keep-blobs=", "keep_blobs", "cachemax=1G", NULL };
	for (const char **b = bad; *b; b++) {
		char *a[] = { "mount.mlfs", "r", "/m", "-o", (char *)*b, NULL };
		int r = parse(&o, &err, 5, a);
		tap_ok(r == -EINVAL && err.msg[0], "-o %s refused: %s", *b, err.msg);
	}
}

int main(void)
{
	sizes();
	durations();
	formats();
	progress_formats();
	mount_options();
	return tap_done();
}
