/* mlfs inspect: what a reference resolves to, without fetching a layer.
 * The JSON form is built first and the text form printed from the same
 * facts, so the two can never disagree. */
#include "fs/cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "common/escape.h"

static json_t *string_list(char **list)
{
	if (!list)
		return json_null();
	json_t *a = json_array();
	for (; *list; list++)
		json_array_append_new(a, json_string(*list));
	return a;
}

static json_t *platform_string(const struct mlfs_platform *p)
{
	char buf[160];
	mlfs_platform_format(p, buf, sizeof buf);
	return json_string(buf);
}

static json_t *describe(const struct mlfs_image *img)
{
	json_t *platforms = json_array();
	for (size_t i = 0; img->index && i < img->index->n_manifests; i++) {
		const struct mlfs_descriptor *d = &img->index->manifests[i];
		json_array_append_new(platforms, json_pack("{s:o, s:s, s:b}", "platform",
							   d->has_platform ? platform_string(&d->platform) : json_null(),
							   "digest", d->digest, "chosen", i == img->chosen));
	}
	json_t *layers = json_array();
	for (size_t i = 0; i < img->manifest->n_layers; i++) {
		const struct mlfs_descriptor *d = &img->manifest->layers[i];
		json_array_append_new(layers, json_pack("{s:s, s:s, s:I}", "digest", d->digest, "media_type",
							d->media_type, "size", (json_int_t)d->size));
	}
	const struct mlfs_config *c = img->config;
	json_t *j = json_pack("{s:s, s:o, s:o, s:o, s:s, s:s, s:{s:s, s:s, s:s, s:o, s:o, s:o, s:o}, s:o}",
			 "reference", img->canonical,
			 "index_digest", img->index ? json_string(img->index_digest) : json_null(),
			 "index_media_type", img->index ? json_string(mlfs_media_string(img->index->media)) : json_null(),
			 "platforms", platforms,
			 "manifest_digest", img->manifest_digest,
			 "manifest_media_type", mlfs_media_string(img->manifest->media),
			 "config", "digest", img->manifest->config.digest, "os", c->platform.os,
			 "architecture", c->platform.arch,
			 "variant", c->platform.variant[0] ? json_string(c->platform.variant) : json_null(),
			 "entrypoint", string_list(c->entrypoint), "cmd", string_list(c->cmd),
			 "env", string_list(c->env),
			 "layers", layers);
	/* Who signed, when the policy wanted signatures (already escaped). */
	if (j && img->signed_by)
		json_object_set_new(j, "signed_by", json_string(img->signed_by));
	return j;
}

static void print_list(const char *label, json_t *list)
{
	printf("%-11s", label);
	if (!json_is_array(list)) {
		printf(" (none)\n");
		return;
	}
	char *s = json_dumps(list, JSON_COMPACT | JSON_ENSURE_ASCII);
	printf(" %s\n", s ? s : "");
	free(s);
}

static void print_text(json_t *j)
{
	json_t *cfg = json_object_get(j, "config");
	printf("Reference:  %s\n", json_string_value(json_object_get(j, "reference")));
	if (json_is_string(json_object_get(j, "index_digest"))) {
		printf("Index:      %s\n            %s\n", json_string_value(json_object_get(j, "index_digest")),
		       json_string_value(json_object_get(j, "index_media_type")));
		printf("Platforms:\n");
		size_t i;
		json_t *p;
		json_array_foreach(json_object_get(j, "platforms"), i, p) {
			const char *name = json_string_value(json_object_get(p, "platform"));
			char safe[256];
			printf("  %s %-16s %s\n", json_is_true(json_object_get(p, "chosen")) ? "*" : " ",
			       name ? mlfs_printable(name, safe, sizeof safe) : "(none)",
			       json_string_value(json_object_get(p, "digest")));
		}
	}
	printf("Manifest:   %s\n            %s\n", json_string_value(json_object_get(j, "manifest_digest")),
	       json_string_value(json_object_get(j, "manifest_media_type")));
	if (json_is_string(json_object_get(j, "signed_by")))
		printf("Signed by:  %s\n", json_string_value(json_object_get(j, "signed_by")));
	/* Everything from the image's config is untrusted text: escaped. */
	const char *variant = json_string_value(json_object_get(cfg, "variant"));
	const char *os = json_string_value(json_object_get(cfg, "os"));
	const char *arch = json_string_value(json_object_get(cfg, "architecture"));
	char s_os[128], s_arch[128], s_var[128], safe[4096];
	printf("Config:     %s\n", json_string_value(json_object_get(cfg, "digest")));
	printf("Platform:   %s/%s%s%s\n", mlfs_printable(os ? os : "", s_os, sizeof s_os),
	       mlfs_printable(arch ? arch : "", s_arch, sizeof s_arch), variant ? "/" : "",
	       variant ? mlfs_printable(variant, s_var, sizeof s_var) : "");
	print_list("Entrypoint:", json_object_get(cfg, "entrypoint"));
	print_list("Cmd:", json_object_get(cfg, "cmd"));
	printf("Env:\n");
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(cfg, "env"), i, v)
		printf("  %s\n", mlfs_printable(json_string_value(v) ? json_string_value(v) : "", safe, sizeof safe));
	printf("Layers:\n");
	json_array_foreach(json_object_get(j, "layers"), i, v)
		printf("  %s %10lld %s\n", json_string_value(json_object_get(v, "digest")),
		       (long long)json_integer_value(json_object_get(v, "size")),
		       mlfs_printable(json_string_value(json_object_get(v, "media_type")) ?: "", safe, sizeof safe));
}

int mlfs_cmd_inspect(int argc, char **argv)
{
	struct cli_image_args a;
	int parsed = cli_parse_image_args(argc, argv, CLI_JSON, &a);
	if (parsed != 0)
		return parsed < 0 ? 2 : 0; /* 1: --help */
	cli_cache_startup(a.opts.cache_dir);
	struct mlfs_err err = { 0 };
	struct mlfs_image *img = NULL;
	if (mlfs_image_open(a.ref, &a.opts, &img, &err) < 0)
		return cli_fail(&err);
	json_t *j = describe(img);
	if (!j) {
		mlfs_image_free(img);
		mlfs_err_set(&err, ENOMEM, "cannot describe the image");
		return cli_fail(&err);
	}
	if (a.json) {
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
		putchar('\n');
	} else {
		print_text(j);
	}
	json_decref(j);
	mlfs_image_free(img);
	return 0;
}
