/* Docker's /etc/docker/daemon.json: "registry-mirrors" are tried, in
 * order, before Docker Hub, for docker.io references only (as dockerd
 * does).  A mirror is an http(s) URL of a host, without a path; http://
 * makes it insecure.  Other keys are dockerd's business and ignored. */
#include <errno.h>
#include <string.h>

#include "fetch/internal.h"

int mlfs_dockerconf_parse(const void *buf, size_t len, const char *name, const struct mlfs_ref *ref,
			  struct mlfs_endpoints *out, struct mlfs_err *err)
{
	if (strcmp(ref->domain, "docker.io"))
		return 0;
	json_error_t je;
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return mlfs_err_set(err, EINVAL, "%s:%d: %s", name, je.line, je.text);
	int r = 0;
	json_t *mirrors = json_is_object(root) ? json_object_get(root, "registry-mirrors") : NULL;
	if (!json_is_object(root))
		r = mlfs_err_set(err, EINVAL, "%s: not a JSON object", name);
	else if (mirrors && !json_is_array(mirrors))
		r = mlfs_err_set(err, EINVAL, "%s: \"registry-mirrors\" must be a list of URLs", name);
	size_t i;
	json_t *m;
	json_array_foreach(r == 0 ? mirrors : NULL, i, m) {
		const char *url = json_string_value(m);
		bool plain = url && !strncmp(url, "http://", 7);
		const char *host = !url ? NULL : plain ? url + 7 : !strncmp(url, "https://", 8) ? url + 8 : NULL;
		size_t n = host ? strcspn(host, "/") : 0;
		if (!host || !n || (host[n] && strcmp(host + n, "/")) || n > 255) {
			r = mlfs_err_set(err, EINVAL, "%s: registry-mirrors[%zu]: not an http(s) URL of a host", name, i);
			break;
		}
		char h[256];
		memcpy(h, host, n);
		h[n] = '\0';
		if ((r = mlfs_endpoints_add(out, h, ref->path, plain, true, MLFS_PULL_ALL, NULL)) < 0) {
			r = mlfs_err_set(err, -r, r == -EINVAL ? "%s: registry-mirrors[%zu]: not an http(s) URL of a host"
							     : "%s: out of memory (registry-mirrors[%zu])", name, i);
			break;
		}
	}
	if (r == 0 && out->n && (r = mlfs_endpoints_add(out, "docker.io", ref->path, false, false, MLFS_PULL_ALL,
							 NULL)) < 0)
		r = mlfs_err_set(err, -r, "out of memory");
	json_decref(root);
	return r;
}
