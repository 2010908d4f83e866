#include "tap.h"

#include <stdarg.h>
#include <stdio.h>

static int n_run, n_failed;

void tap_ok(bool cond, const char *fmt, ...)
{
	va_list ap;
	n_run++;
	if (!cond)
		n_failed++;
	printf("%s %d - ", cond ? "ok" : "not ok", n_run);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

void tap_diag(const char *fmt, ...)
{
	va_list ap;
	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

int tap_done(void)
{
	printf("1..%d\n", n_run);
	return n_failed ? 1 : 0;
}
