/* JSON error texts: the registry's error bodies, and type names for the
 * parsers' messages.
 *
 * The distribution spec's error body: {"errors":[{"code","message","detail"}]}.
 * Only the first error is shown: registries rarely send more, and the user
 * reads one line. */
#include <stdio.h>
#include <string.h>
#include <jansson.h>

#include "fetch/internal.h"

void mlfs_registry_error_text(const char *body, size_t len, char *buf, size_t buflen)
{
	buf[0] = '\0';
	if (!body || !len)
		return;
	json_t *root = json_loadb(body, len, 0, NULL);
	if (!root)
		return;
	const char *code = NULL, *message = NULL;
	json_t *errors = NULL;
	if (json_unpack(root, "{s:o}", "errors", &errors) == 0 && json_is_array(errors) &&
	    json_array_size(errors) > 0)
		json_unpack(json_array_get(errors, 0), "{s?s, s?s}", "code", &code, "message", &message);
	if (message && code)
		snprintf(buf, buflen, "%s (%s)", message, code);
	else if (message || code)
		snprintf(buf, buflen, "%s", message ? message : code);
	/* Strip control characters, C1 ones in UTF-8 (0xc2 0x80-0x9f) too:
	 * this text is the server's, shown on a terminal. */
	for (unsigned char *p = (unsigned char *)buf; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			*p = ' ';
		else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
			p[0] = p[1] = ' ';
	}
	json_decref(root);
}

