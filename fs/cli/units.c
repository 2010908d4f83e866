/* Sizes and durations as people type them: "16G", "500MiB", "30d".
 *
 * Sizes are binary, whatever the spelling (K, KB, KiB all mean 1024), the
 * way Docker and systemd read them on the command line: nobody capping a
 * cache means a 1000-based gigabyte, and one rule is easier to remember. */
#include "fs/cli/units.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int mlfs_parse_size(const char *s, uint64_t *out)
{
	/* Digits, an optional fraction, a unit: no signs, spaces, hex or
	 * exponents (strtod would take "0x1B" as 27 and "1e3k"). */
	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	uint64_t whole = 0, frac = 0, scale = 1;
	const char *p = s;
	for (; isdigit((unsigned char)*p); p++) {
		if (whole > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -ERANGE;
		whole = whole * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '.') {
		if (!isdigit((unsigned char)*++p))
			return -EINVAL;
		for (; isdigit((unsigned char)*p); p++)
			if (scale < 1000000) { /* 6 places: plenty, and frac << 40 fits 64 bits */
				frac = frac * 10 + (uint64_t)(*p - '0');
				scale *= 10;
			}
	}
	static const struct { const char *suffix; unsigned shift; } units[] = {
		{ "", 0 }, { "b", 0 },
		{ "k", 10 }, { "kb", 10 }, { "kib", 10 },
		{ "m", 20 }, { "mb", 20 }, { "mib", 20 },
		{ "g", 30 }, { "gb", 30 }, { "gib", 30 },
		{ "t", 40 }, { "tb", 40 }, { "tib", 40 },
	};
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (strcasecmp(p, units[i].suffix))
			continue;
		unsigned shift = units[i].shift;
		if (shift && whole > UINT64_MAX >> shift)
			return -ERANGE;
		/* frac < scale <= 10^6 < 2^20 and shift <= 40: frac << shift < 2^60. */
		uint64_t part = shift ? (frac << shift) / scale : 0;
		uint64_t bytes = whole << shift;
		if (bytes > UINT64_MAX - part)
			return -ERANGE;
		*out = bytes + part;
		return 0;
	}
	return -EINVAL;
}

int mlfs_parse_duration(const char *s, int64_t *out)
{
	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long n = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	static const struct { const char *suffix; int64_t seconds; } units[] = {
		{ "", 1 }, { "s", 1 }, { "m", 60 }, { "min", 60 }, { "h", 3600 },
		{ "d", 86400 }, { "w", 7 * 86400 },
	};
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (strcmp(end, units[i].suffix))
			continue;
		if (n > (unsigned long long)(INT64_MAX / units[i].seconds))
			return -ERANGE;
		*out = (int64_t)n * units[i].seconds;
		return 0;
	}
	return -EINVAL;
}

void mlfs_format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double v = (double)bytes;
	size_t u = 0;
	/* 1048575 bytes is "1.0 MiB", not "1024.0 KiB": compare what will print. */
	while (v >= 1023.95 && u + 1 < sizeof units / sizeof units[0]) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
}

void mlfs_format_rate(double bytes_per_s, char *buf, size_t len)
{
	char size[32];
	mlfs_format_size(isfinite(bytes_per_s) && bytes_per_s > 0 ? (uint64_t)bytes_per_s : 0, size, sizeof size);
	snprintf(buf, len, "%s/s", size);
}

/* Whole seconds s as "7s", "1m05s", "2h03m" (minutes rounded down). */
static void format_whole(uint64_t s, char *buf, size_t len)
{
	if (s < 60)
		snprintf(buf, len, "%" PRIu64 "s", s);
	else if (s < 3600)
		snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
	else
		snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s % 3600 / 60);
}

void mlfs_format_eta(double seconds, char *buf, size_t len)
{
	if (!isfinite(seconds) || seconds < 0 || seconds > 99 * 3600.0) {
		snprintf(buf, len, "--");
		return;
	}
	uint64_t s = (uint64_t)seconds; /* rounded up, without libm */
	format_whole((double)s < seconds ? s + 1 : s, buf, len);
}

void mlfs_format_elapsed(double seconds, char *buf, size_t len)
{
	if (!isfinite(seconds) || seconds < 0)
		seconds = 0;
	if (seconds < 59.95)
		snprintf(buf, len, "%.1f s", seconds);
	else
		format_whole((uint64_t)(seconds + 0.5), buf, len);
}
