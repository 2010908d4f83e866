/* WWW-Authenticate parsing on arbitrary bytes (cut at the first NUL, as a
 * header value would be).  Checks, beyond memory errors, that a failure
 * leaves nothing allocated and a success a lower-case scheme. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/fetch.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	char *s = malloc(n + 1);
	if (!s)
		return 0;
	memcpy(s, d, n);
	s[n] = '\0';

	struct mlfs_challenge c;
	int r = mlfs_challenge_parse(s, &c);
	if (r < 0) {
		if (r != -EINVAL && r != -ENOMEM)
			abort();
		if (c.realm || c.service || c.scope || c.error)
			abort();
	} else {
		if (!c.scheme[0])
			abort();
		for (const char *p = c.scheme; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				abort();
		/* values come out of s: never longer than it */
		const char *v[] = { c.realm, c.service, c.scope, c.error };
		for (size_t i = 0; i < 4; i++)
			if (v[i] && strlen(v[i]) > n)
				abort();
	}
	mlfs_challenge_clear(&c);
	free(s);
	return 0;
}
