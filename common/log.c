#include "common/log.h"

#include "common/escape.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

/* Written once by mlfs_log_setup() before threads exist, read-only after:
 * the one piece of process-wide configuration outside fs/. */
static struct {
	enum mlfs_log_level level;
	unsigned areas;
	bool syslog;
} cfg = { MLFS_LOG_WARN, 0, false };

static const struct {
	const char *name;
	unsigned bit;
} area_names[] = {
	{ "main", MLFS_AREA_MAIN },   { "fetch", MLFS_AREA_FETCH }, { "auth", MLFS_AREA_AUTH },
	{ "layers", MLFS_AREA_LAYERS }, { "fs", MLFS_AREA_FS },     { "all", MLFS_AREA_ALL },
};

void mlfs_log_setup(enum mlfs_log_level level, unsigned debug_areas, bool use_syslog)
{
	cfg.level = level;
	cfg.areas = debug_areas;
	cfg.syslog = use_syslog;
	if (use_syslog)
		openlog("mlfs", LOG_PID, LOG_DAEMON);
}

int mlfs_log_parse_areas(const char *spec, unsigned *areas)
{
	unsigned bits = 0;
	const char *p = spec;
	while (*p) {
		/* ':' and '+' too: inside -o debug=..., a comma would end the option. */
		size_t n = strcspn(p, ",:+");
		bool found = false;
		for (size_t i = 0; i < sizeof area_names / sizeof area_names[0]; i++) {
			if (strlen(area_names[i].name) == n && !strncmp(p, area_names[i].name, n)) {
				bits |= area_names[i].bit;
				found = true;
			}
		}
		if (!found && n)
			return -EINVAL;
		p += n;
		if (*p)
			p++;
	}
	*areas = bits;
	return 0;
}

bool mlfs_log_enabled(enum mlfs_log_level level, enum mlfs_log_area area)
{
	if (level == MLFS_LOG_DEBUG)
		return (cfg.areas & area) != 0;
	return level <= cfg.level;
}

void mlfs_log(enum mlfs_log_level level, enum mlfs_log_area area, const char *fmt, ...)
{
	if (!mlfs_log_enabled(level, area))
		return;
	static const char *const names[] = { "error", "warning", "info", "debug" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	/* Log lines quote tar names, config strings, URLs and servers' text:
	 * escaped here, once for every caller, so none of it reaches the
	 * terminal or syslog as a control sequence or a second line. */
	char raw[2048], line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof raw, fmt, ap);
	va_end(ap);
	mlfs_escape(raw, strlen(raw), 0, line, sizeof line);
	if (cfg.syslog)
		syslog(prio[level], "%s", line);
	else
		fprintf(stderr, "mlfs: %s: %s\n", names[level], line);
}
