/* SPDX-License-Identifier: MIT */
/*
 * doctor — what this host can do for childflow, and how to fix the rest (`--doctor`), and the same
 * explanation when a normal run fails at a setup step (util/explain.h, doctor_init()).
 *
 * The checks are one table (checks.c): each entry has a key, a label, the backends it concerns, and
 * a function that *tries* the thing where that is safe (in a throwaway namespace or a forked child,
 * doctor_try()), never guessing from files alone.  A check gives a finding: ok / warning / blocked,
 * what it found, and for anything not ok the exact fix on this distribution.  Preflight checks
 * decide the verdict (any blocked: exit 1); capability checks only inform (optional features).
 *
 * A setup step of a normal run that fails calls explain_fail() with the check's key and the errno:
 * the check's explain() turns that into the very line the doctor prints for it.  Nothing runs
 * before a failure: the happy path pays nothing.
 */
#ifndef CHILDFLOW_DOCTOR_H
#define CHILDFLOW_DOCTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

struct proxy;

enum doctor_status { DOCTOR_OK, DOCTOR_WARNING, DOCTOR_BLOCKED };
enum doctor_format { DOCTOR_TEXT, DOCTOR_JSON };

#define DOCTOR_TEXT_MAX 768

struct doctor_finding {
	enum doctor_status status;
	char detail[DOCTOR_TEXT_MAX];   /* what was found */
	char hint[DOCTOR_TEXT_MAX];     /* the fix; "" when ok */
};

/* What the checks are about: the selected backend and the options that bring their own checks. */
struct doctor_env {
	bool rootful;                   /* --root */
	const char *iface;              /* -i, or NULL */
	const struct proxy *proxy;      /* -p (set up, credentials included), or NULL */
	bool proxy_auth;                /* -U given */
	const char *proxy_error;        /* -p given but the proxy could not be set up: why */
	const struct sockaddr_storage *dns;   /* --dns, or NULL: the host's resolvers */
	const char *resolv_path;        /* the host's resolv.conf ("/etc/resolv.conf") */
};

enum doctor_kind { DOCTOR_PREFLIGHT, DOCTOR_CAPABILITY };

#define DOCTOR_ROOTLESS 1u
#define DOCTOR_ROOTFUL 2u

struct doctor_check {
	const char *key;                /* stable, for scripts (JSON "key") */
	const char *label;              /* for people */
	enum doctor_kind kind;
	unsigned int backends;          /* DOCTOR_ROOTLESS | DOCTOR_ROOTFUL */
	const char *reason_code;        /* §5.2's code for a run that fails at this step, or NULL */
	/* Does it apply to @env (e.g. -p given)?  NULL: always. */
	bool (*applies)(const struct doctor_env *env);
	/* Try it and fill @f. */
	void (*run)(const struct doctor_env *env, struct doctor_finding *f);
	/* A step of a run failed with @err (positive errno, or 0) and @what (the step's own words, or
	 * NULL): fill @f with the same words run() uses for that failure.  NULL: the check is only
	 * ever run by the doctor. */
	void (*explain)(int err, const char *what, struct doctor_finding *f);
};

extern const struct doctor_check doctor_checks[];
extern const size_t doctor_n_checks;

/* One line of a report. */
struct doctor_item {
	const struct doctor_check *check;
	struct doctor_finding f;
};

struct doctor_report {
	bool rootful;
	unsigned int uid, euid;
	struct doctor_item *items;
	size_t n;
};

/* doctor_verdict() - "ready", "ready with warnings" or "blocked", from the preflight items. */
const char *doctor_verdict(const struct doctor_report *r);

/* doctor_print() - @r as text or JSON (README "Doctor").  Return: 0, or -1 on a write error. */
int doctor_print(const struct doctor_report *r, enum doctor_format fmt, FILE *out);

/* doctor_run() - run every check that applies, print the report.  Return: 0 when the backend can
 * run, 1 when something blocks it. */
int doctor_run(const struct doctor_env *env, enum doctor_format fmt, FILE *out);

/*
 * doctor_init() - install the doctor as util/explain.h's explainer: a run's failing setup step
 * (explain_fail()) then prints the doctor's finding for its check (what is wrong, the fix, the
 * reason code), and a surviving condition (explain_warn()) the warning and the fix.  While the
 * doctor itself runs a check (doctor_capture()), the finding is kept for the report instead.
 */
void doctor_init(void);

/* doctor_capture() - keep explanations in @f instead of printing them (NULL: print again). */
void doctor_capture(struct doctor_finding *f);

/* doctor_find() - the check with @key, or NULL. */
const struct doctor_check *doctor_find(const char *key);

/* doctor_detail(), doctor_hint() - printf into a finding (doctor_detail() sets the status too). */
void doctor_detail(struct doctor_finding *f, enum doctor_status st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void doctor_hint(struct doctor_finding *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
