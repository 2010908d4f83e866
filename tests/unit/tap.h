/* A minimal TAP producer for the unit tests (meson test protocol 'tap'). */
#pragma once
#include <stdbool.h>
#include <string.h>

void tap_ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the plan and returns the process exit status. */
int tap_done(void);

#define tap_is_str(got, want, name)                                                     \
	do {                                                                            \
		const char *_g = (got), *_w = (want);                                   \
		bool _ok = (_g == NULL && _w == NULL) || (_g && _w && !strcmp(_g, _w)); \
		tap_ok(_ok, "%s", name);                                                \
		if (!_ok)                                                               \
			tap_diag("got '%s', want '%s'", _g ? _g : "(null)",             \
				 _w ? _w : "(null)");                                   \
	} while (0)

#define tap_is_int(got, want, name)                                                   \
	do {                                                                          \
		long long _g = (got), _w = (want);                                    \
		tap_ok(_g == _w, "%s", name);                                         \
		if (_g != _w)                                                         \
			tap_diag("got %lld, want %lld", _g, _w);                      \
	} while (0)

void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
