/* SPDX-License-Identifier: MIT */
#include "sandbox/idmap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int idmap_choice_parse(const char *s, enum idmap_choice *out)
{
	if (!s || !*s || !strcmp(s, "auto"))
		*out = IDMAP_CHOOSE_AUTO;
	else if (!strcmp(s, "direct"))
		*out = IDMAP_CHOOSE_DIRECT;
	else if (!strcmp(s, "helper"))
		*out = IDMAP_CHOOSE_HELPER;
	else
		return -EINVAL;
	return 0;
}

bool subid_lookup(const char *content, const char *name, unsigned long id, struct subid_range *out)
{
	char idstr[24];
	const char *line = content;

	snprintf(idstr, sizeof(idstr), "%lu", id);
	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		const char *c1 = memchr(line, ':', len);

		if (c1 && line[0] != '#') {
			size_t klen = (size_t)(c1 - line);
			bool match = (name && strlen(name) == klen && !strncmp(line, name, klen)) ||
				     (strlen(idstr) == klen && !strncmp(line, idstr, klen));
			char rest[64];
			size_t rlen = len - klen - 1;

			if (match && rlen < sizeof(rest)) {
				unsigned long s, n;
				char tail;

				memcpy(rest, c1 + 1, rlen);
				rest[rlen] = '\0';
				if (sscanf(rest, "%lu:%lu%c", &s, &n, &tail) == 2 && n > 0) {
					out->start = s;
					out->count = n;
					return true;
				}
			}
		}
		line = end ? end + 1 : NULL;
	}
	return false;
}

/* Inner map for helper mode: inside @self <-> U1 0; every other inside id <-> U1 1..count. */
static void inner_helper(char *buf, size_t len, unsigned long self, unsigned long count)
{
	if (self == 0)
		snprintf(buf, len, "0 0 1\n1 1 %lu\n", count);
	else if (self <= count) {
		int n = snprintf(buf, len, "0 1 %lu\n%lu 0 1\n", self, self);

		if (count > self)
			snprintf(buf + n, len - n, "%lu %lu %lu\n", self + 1, self + 1, count - self);
	} else
		snprintf(buf, len, "0 1 %lu\n%lu 0 1\n", count, self);
}

int idmap_plan_make(struct idmap_plan *plan, enum idmap_mode mode, uid_t uid, gid_t gid,
		    const struct subid_range *su, const struct subid_range *sg)
{
	memset(plan, 0, sizeof(*plan));
	plan->mode = mode;
	switch (mode) {
	case IDMAP_ROOT:
		snprintf(plan->outer_uid, sizeof(plan->outer_uid), "0 0 4294967295\n");
		snprintf(plan->outer_gid, sizeof(plan->outer_gid), "0 0 4294967295\n");
		snprintf(plan->inner_uid, sizeof(plan->inner_uid), "0 0 4294967295\n");
		snprintf(plan->inner_gid, sizeof(plan->inner_gid), "0 0 4294967295\n");
		return 0;
	case IDMAP_DIRECT:
		plan->setgroups_deny = true;
		snprintf(plan->outer_uid, sizeof(plan->outer_uid), "0 %u 1\n", (unsigned)uid);
		snprintf(plan->outer_gid, sizeof(plan->outer_gid), "0 %u 1\n", (unsigned)gid);
		snprintf(plan->inner_uid, sizeof(plan->inner_uid), "%u 0 1\n", (unsigned)uid);
		snprintf(plan->inner_gid, sizeof(plan->inner_gid), "%u 0 1\n", (unsigned)gid);
		return 0;
	case IDMAP_HELPER:
		if (!su || !sg || !su->count || !sg->count || uid == 0)
			return -EINVAL;
		plan->subuid = *su;
		plan->subgid = *sg;
		snprintf(plan->outer_uid, sizeof(plan->outer_uid), "0 %u 1\n1 %lu %lu\n",
			 (unsigned)uid, su->start, su->count);
		snprintf(plan->outer_gid, sizeof(plan->outer_gid), "0 %u 1\n1 %lu %lu\n",
			 (unsigned)gid, sg->start, sg->count);
		inner_helper(plan->inner_uid, sizeof(plan->inner_uid), uid, su->count);
		inner_helper(plan->inner_gid, sizeof(plan->inner_gid), gid, sg->count);
		return 0;
	}
	return -EINVAL;
}
