/* SPDX-License-Identifier: MIT */
/*
 * record — the text of a --root state record (ROOT_STATE_DIR/slot-<n>), parsed without trusting
 * it.  A record is read back by the next run when its own run died (stale-state collection), as
 * root, and each line it accepts makes that run delete a policy rule, empty a routing table or
 * write a sysctl: a damaged or planted record must not name anything else.  Pure (no I/O):
 * tests/fuzz/fuzz_rootrec.c feeds it anything.  Internal to src/root/.
 *
 * Lines: "# childflow --root, pid <pid>, netns <dev>:<ino>" (the first), "netns <dev> <ino>
 * <cookie>" (the second; records of older versions have none), "rule <4|6> <prio> <table>
 * <source address>", "table <table>", "<sysctl path> <value to restore>".
 */
#ifndef CHILDFLOW_ROOT_RECORD_H
#define CHILDFLOW_ROOT_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#include "root/netns.h"

#define ROOT_REC_VAL_MAX 64

enum root_rec_kind {
	ROOT_REC_NONE,     /* the header, a blank or unknown line: nothing to do */
	ROOT_REC_RULE,     /* delete the rule "from @addr lookup @table" at @prio */
	ROOT_REC_TABLE,    /* empty routing table @table */
	ROOT_REC_SYSCTL,   /* write @value to @path */
	ROOT_REC_NETNS,    /* the run's network namespace: @netns */
};

struct root_rec_line {
	enum root_rec_kind kind;
	int family;                     /* ROOT_REC_RULE: AF_INET or AF_INET6 */
	unsigned int prio, table;
	unsigned char addr[16];
	const char *path, *value;       /* ROOT_REC_SYSCTL: inside the line given */
	struct root_netns netns;        /* ROOT_REC_NETNS */
};

/*
 * root_rec_next() - the next line of the record text at *@cursor, NUL-terminated in place.
 * Return: the line, or NULL at the end.
 */
char *root_rec_next(char **cursor);

/*
 * root_rec_parse() - what @line (NUL-terminated, changed in place) asks to undo.  Rules and tables
 * are accepted only in --root's own ranges (ROOT_RULE_PRIO_BASE, ROOT_TABLE_BASE + a slot), sysctls
 * only under /proc/sys/net/ with plain components.  Return: the kind; ROOT_REC_NONE also for a
 * malformed line (it is left alone).
 */
enum root_rec_kind root_rec_parse(char *line, struct root_rec_line *out);

/*
 * root_rec_value() - the value record text @rec restores for sysctl @path, into @val (@vlen bytes).
 * Return: true when it names @path.
 */
bool root_rec_value(const char *rec, const char *path, char *val, size_t vlen);

/*
 * root_rec_netns() - the network namespace record text @rec names, into @id: its "netns" line, or
 * for a record of an older version without one, its first line's "netns <dev>:<ino>" (cookie 0).
 * Return: false when it names none, or more than one (two "netns" lines, or a first line that
 * disagrees with the "netns" line).
 */
bool root_rec_netns(const char *rec, struct root_netns *id);

#endif
