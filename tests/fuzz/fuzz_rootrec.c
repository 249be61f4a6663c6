/*
 * libFuzzer target: --root's reading of its own state records (root/record.c).
 *
 * A record (/run/childflow-root/slot-N) whose run died is read back, as root, by the next run's
 * stale-state collection, and every line it accepts deletes a policy rule, empties a routing table
 * or writes a sysctl.  The input is a record's text, split and parsed the way restore_record()
 * does, and searched the way live_value() does.  A crash, a sanitizer report, or an accepted line
 * outside --root's own tables and priorities or outside /proc/sys/net/ is a finding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "backend/netplan.h"
#include "root/internal.h"
#include "root/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct root_rec_line *rl, const char *buf, size_t len)
{
	switch (rl->kind) {
	case ROOT_REC_RULE:
		if ((rl->family != AF_INET && rl->family != AF_INET6) || rl->prio < ROOT_RULE_PRIO_BASE ||
		    rl->prio >= ROOT_RULE_PRIO_BASE + NETPLAN_UPLINK_SLOTS)
			abort();
		/* fall through */
	case ROOT_REC_TABLE:
		if (rl->table < ROOT_TABLE_BASE || rl->table >= ROOT_TABLE_BASE + NETPLAN_UPLINK_SLOTS)
			abort();
		break;
	case ROOT_REC_SYSCTL: {
		size_t pl = strlen(rl->path);

		if (rl->path < buf || rl->value < buf || rl->value + strlen(rl->value) > buf + len ||
		    strncmp(rl->path, "/proc/sys/net/", 14) != 0 || strstr(rl->path, "/../") ||
		    strstr(rl->path, "/./") || strstr(rl->path, "//") || (pl >= 3 && !strcmp(rl->path + pl - 3, "/..")) ||
		    strlen(rl->value) == 0 || strlen(rl->value) >= ROOT_REC_VAL_MAX || strchr(rl->path, ' '))
			abort();
		break;
	}
	case ROOT_REC_NETNS:
	case ROOT_REC_NONE:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *rec, *copy, *cur, *l, val[8];
	struct root_rec_line rl;
	struct root_netns id;

	if (size > 8192)
		return 0;   /* REC_MAX */
	rec = malloc(size + 1);
	copy = malloc(size + 1);
	if (!rec || !copy) {
		free(rec);
		free(copy);
		return 0;
	}
	memcpy(rec, data, size);
	rec[size] = '\0';
	memcpy(copy, rec, size + 1);
	root_rec_netns(rec, &id);
	if (root_rec_value(rec, "/proc/sys/net/ipv4/ip_forward", val, sizeof(val)) && strnlen(val, sizeof(val)) >= sizeof(val))
		abort();
	for (cur = copy; (l = root_rec_next(&cur)) != NULL; ) {
		root_rec_parse(l, &rl);
		check(&rl, copy, size);
	}
	free(rec);
	free(copy);
	return 0;
}
