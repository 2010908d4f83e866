/* Sizes and durations as people type them: "16G", "500MiB", "30d".
 *
 * Sizes are binary, whatever the spelling (K, KB, KiB all mean 1024), the
 * way Docker and systemd read them on the command line: nobody capping a
 * cache means a 1000-based gigabyte, and one rule is easier to remember. */
#include "fs/units.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int mlfs_parse_size(const char *s, uint64_t *out)
{
	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || !(v >= 0 && v < 1e30))
		return -EINVAL;
	static const struct { const char *suffix; unsigned shift; } units[] = {
		{ "", 0 }, { "b", 0 },
		{ "k", 10 }, { "kb", 10 }, { "kib", 10 },
		{ "m", 20 }, { "mb", 20 }, { "mib", 20 },
		{ "g", 30 }, { "gb", 30 }, { "gib", 30 },
		{ "t", 40 }, { "tb", 40 }, { "tib", 40 },
	};
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (strcasecmp(end, units[i].suffix))
			continue;
		double bytes = v * (double)(1ull << units[i].shift);
		if (bytes >= 18446744073709551616.0) /* 2^64 */
			return -ERANGE;
		*out = (uint64_t)bytes;
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
	while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
}
