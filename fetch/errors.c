/* JSON error texts: the registry's error bodies, and type names for the
 * parsers' messages.
 *
 * The distribution spec's error body: {"errors":[{"code","message","detail"}]}.
 * Only the first error is shown: registries rarely send more, and the user
 * reads one line. */
#include <stdio.h>
#include <string.h>
#include <jansson.h>

#include "common/escape.h"
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
	char raw[1024] = "";
	if (message && code)
		snprintf(raw, sizeof raw, "%s (%s)", message, code);
	else if (message || code)
		snprintf(raw, sizeof raw, "%s", message ? message : code);
	/* This text is the server's, shown on a terminal. */
	mlfs_escape(raw, strlen(raw), 0, buf, buflen);
	json_decref(root);
}

