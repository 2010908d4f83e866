/* Small helpers for messages about untrusted JSON, shared by the manifest,
 * config and TOC parsers.  Header-only: json_typeof() is a macro, so
 * including this links nothing. */
#pragma once
#include <jansson.h>

/* "must be a string, not an array": a value's JSON type, for messages. */
static inline const char *mlfs_json_type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a real number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "?";
}
