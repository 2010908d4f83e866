/* One logger: levels, per-area switches (-o debug=fetch,layers), stderr
 * before daemonising and syslog after.  Never pass credentials or
 * Authorization headers to it. */
#pragma once
#include <stdbool.h>

enum mlfs_log_level { MLFS_LOG_ERROR, MLFS_LOG_WARN, MLFS_LOG_INFO, MLFS_LOG_DEBUG };

enum mlfs_log_area {
	MLFS_AREA_MAIN = 1 << 0,
	MLFS_AREA_FETCH = 1 << 1,
	MLFS_AREA_AUTH = 1 << 2,
	MLFS_AREA_LAYERS = 1 << 3,
	MLFS_AREA_FS = 1 << 4,
	MLFS_AREA_ALL = 0xff,
};

/* Configured once at startup, before any thread starts. */
void mlfs_log_setup(enum mlfs_log_level level, unsigned debug_areas, bool use_syslog);
/* Parses "fetch,auth" / "all" into area bits; returns -EINVAL on an unknown name. */
int mlfs_log_parse_areas(const char *spec, unsigned *areas);
bool mlfs_log_enabled(enum mlfs_log_level level, enum mlfs_log_area area);
void mlfs_log(enum mlfs_log_level level, enum mlfs_log_area area, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_error(area, ...) mlfs_log(MLFS_LOG_ERROR, area, __VA_ARGS__)
#define log_warn(area, ...) mlfs_log(MLFS_LOG_WARN, area, __VA_ARGS__)
#define log_info(area, ...) mlfs_log(MLFS_LOG_INFO, area, __VA_ARGS__)
#define log_debug(area, ...)                                                  \
	do {                                                                  \
		if (mlfs_log_enabled(MLFS_LOG_DEBUG, area))                   \
			mlfs_log(MLFS_LOG_DEBUG, area, __VA_ARGS__);         \
	} while (0)
