/* SPDX-License-Identifier: MIT */
/*
 * doctor — running the table of checks (checks.c), the report as text or JSON, and the explained
 * failures of normal runs (the explainer of util/explain.h).
 */
#include "doctor/internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/explain.h"
#include "util/log.h"

static struct doctor_finding *captured;   /* doctor_capture(): explanations go here */

void doctor_detail(struct doctor_finding *f, enum doctor_status st, const char *fmt, ...)
{
	va_list ap;

	f->status = st;
	va_start(ap, fmt);
	vsnprintf(f->detail, sizeof(f->detail), fmt, ap);
	va_end(ap);
}

void doctor_hint(struct doctor_finding *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(f->hint, sizeof(f->hint), fmt, ap);
	va_end(ap);
}

const struct doctor_check *doctor_find(const char *key)
{
	for (size_t i = 0; i < doctor_n_checks; i++)
		if (!strcmp(doctor_checks[i].key, key))
			return &doctor_checks[i];
	return NULL;
}

void doctor_capture(struct doctor_finding *f)
{
	captured = f;
}

/* The check's explanation of a failed step: its explain(), or the step's own words. */
static const struct doctor_check *explain(const char *key, int err, const char *what, struct doctor_finding *f)
{
	const struct doctor_check *c = doctor_find(key);

	memset(f, 0, sizeof(*f));
	if (c && c->explain) {
		c->explain(err, what, f);
	} else {
		doctor_detail(f, DOCTOR_BLOCKED, "%s%s%s", what ? what : "failed", err ? ": " : "",
			      err ? strerror(err) : "");
	}
	return c;
}

/* The explainer (util/explain.h): the check's words, printed, or kept for the report. */
static void tell(bool fatal, const char *key, int err, const char *what)
{
	struct doctor_finding f;
	const struct doctor_check *c;

	if (captured) {
		explain(key, err, what, captured);
		return;
	}
	c = explain(key, err, what, &f);
	if (fatal)
		log_error("%s", f.detail);
	else
		log_warn("%s", f.detail);
	if (f.hint[0])
		log_error("fix: %s", f.hint);
	if (fatal && c && c->reason_code)
		log_error("reason_code: %s", c->reason_code);
}

void doctor_init(void)
{
	explain_set(tell);
}

/* ---------- the report ---------- */

static const char *status_word(const struct doctor_item *it, bool upper)
{
	static const char *const pre[3][2] = { { "ok", "OK" }, { "warning", "WARNING" }, { "blocked", "BLOCKED" } };
	static const char *const cap[3][2] = {
		{ "available", "AVAILABLE" }, { "limited", "LIMITED" }, { "unavailable", "UNAVAILABLE" },
	};

	return (it->check->kind == DOCTOR_CAPABILITY ? cap : pre)[it->f.status][upper];
}

const char *doctor_verdict(const struct doctor_report *r)
{
	enum doctor_status worst = DOCTOR_OK;

	for (size_t i = 0; i < r->n; i++)
		if (r->items[i].check->kind == DOCTOR_PREFLIGHT && r->items[i].f.status > worst)
			worst = r->items[i].f.status;
	return worst == DOCTOR_BLOCKED ? "blocked" : worst == DOCTOR_WARNING ? "ready with warnings" : "ready";
}

static const char *backend_name(const struct doctor_report *r)
{
	return r->rootful ? "rootful" : "rootless-internal";
}

static void print_text(const struct doctor_report *r, FILE *out)
{
	static const char *const heads[2] = { "capabilities", "preflight" };
	static const enum doctor_kind kinds[2] = { DOCTOR_CAPABILITY, DOCTOR_PREFLIGHT };

	fprintf(out, "childflow doctor\nbackend: %s\nuser: uid %u / euid %u\nstatus: %s\n", backend_name(r),
		r->uid, r->euid, doctor_verdict(r));
	for (int k = 0; k < 2; k++) {
		fprintf(out, "\n%s\n", heads[k]);
		for (size_t i = 0; i < r->n; i++) {
			const struct doctor_item *it = &r->items[i];

			if (it->check->kind != kinds[k])
				continue;
			fprintf(out, "[%s] %s\n  %s\n", status_word(it, true), it->check->label, it->f.detail);
			if (it->f.status != DOCTOR_OK && it->f.hint[0])
				fprintf(out, "  fix: %s\n", it->f.hint);
		}
	}
}

/* @s as a JSON string (RFC 8259: quote, backslash and control characters escaped). */
static void json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", out);
		else if (*p == '\t')
			fputs("\\t", out);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static void print_json(const struct doctor_report *r, FILE *out)
{
	static const char *const names[2] = { "capabilities", "preflight" };
	static const enum doctor_kind kinds[2] = { DOCTOR_CAPABILITY, DOCTOR_PREFLIGHT };

	fputs("{\n  \"backend\": ", out);
	json_str(out, backend_name(r));
	fprintf(out, ",\n  \"uid\": %u,\n  \"euid\": %u,\n  \"status\": ", r->uid, r->euid);
	json_str(out, doctor_verdict(r));
	for (int k = 0; k < 2; k++) {
		bool first = true;

		fprintf(out, ",\n  \"%s\": [", names[k]);
		for (size_t i = 0; i < r->n; i++) {
			const struct doctor_item *it = &r->items[i];

			if (it->check->kind != kinds[k])
				continue;
			fputs(first ? "\n    {\n      \"key\": " : ",\n    {\n      \"key\": ", out);
			first = false;
			json_str(out, it->check->key);
			fputs(",\n      \"label\": ", out);
			json_str(out, it->check->label);
			fputs(",\n      \"status\": ", out);
			json_str(out, status_word(it, false));
			fputs(",\n      \"detail\": ", out);
			json_str(out, it->f.detail);
			fputs(",\n      \"hint\": ", out);
			if (it->f.status != DOCTOR_OK && it->f.hint[0])
				json_str(out, it->f.hint);
			else
				fputs("null", out);
			fputs("\n    }", out);
		}
		fputs(first ? "]" : "\n  ]", out);
	}
	fputs("\n}\n", out);
}

int doctor_print(const struct doctor_report *r, enum doctor_format fmt, FILE *out)
{
	if (fmt == DOCTOR_JSON)
		print_json(r, out);
	else
		print_text(r, out);
	return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}

int doctor_run(const struct doctor_env *env, enum doctor_format fmt, FILE *out)
{
	struct doctor_report r = { .rootful = env->rootful, .uid = (unsigned)getuid(), .euid = (unsigned)geteuid() };
	unsigned int want = env->rootful ? DOCTOR_ROOTFUL : DOCTOR_ROOTLESS;
	int code;

	r.items = calloc(doctor_n_checks, sizeof(*r.items));
	if (!r.items) {
		log_error("cannot run the doctor: out of memory");
		return 1;
	}
	for (size_t i = 0; i < doctor_n_checks; i++) {
		const struct doctor_check *c = &doctor_checks[i];
		struct doctor_item *it = &r.items[r.n];

		if (!(c->backends & want) || (c->applies && !c->applies(env)))
			continue;
		it->check = c;
		doctor_capture(&it->f);
		c->run(env, &it->f);
		doctor_capture(NULL);
		r.n++;
	}
	code = strcmp(doctor_verdict(&r), "blocked") == 0 ? 1 : 0;
	if (doctor_print(&r, fmt, out) < 0) {
		log_error("cannot write the doctor's report");
		code = 1;
	}
	free(r.items);
	return code;
}
