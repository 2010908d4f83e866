/* Sizes and durations on the command line and in mount options. */
#pragma once
#include <stddef.h>
#include <stdint.h>

/* "1073741824", "1G", "1.5GiB", "500mb", "0": bytes (powers of 1024;
 * fractions of a byte dropped).  -EINVAL when malformed, -ERANGE beyond
 * 2^64 - 1. */
int mlfs_parse_size(const char *s, uint64_t *out);
/* "90", "90s", "15m", "12h", "30d", "2w": seconds. */
int mlfs_parse_duration(const char *s, int64_t *out);
/* "512 B", "1.5 MiB", ... */
void mlfs_format_size(uint64_t bytes, char *buf, size_t len);
/* "8.1 MiB/s": bytes per second, as mlfs_format_size(). */
void mlfs_format_rate(double bytes_per_s, char *buf, size_t len);
/* An estimate of time left, rounded up to whole seconds: "7s", "1m05s",
 * "2h03m"; "--" when unknown (negative, not finite, or beyond 99 hours). */
void mlfs_format_eta(double seconds, char *buf, size_t len);
/* Time taken: "0.4 s", "12.3 s", then "1m05s", "2h03m". */
void mlfs_format_elapsed(double seconds, char *buf, size_t len);
