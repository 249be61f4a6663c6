/* SPDX-License-Identifier: MIT */
/*
 * explain — how a setup step that fails (or a condition a run survives) is told to the user: in the
 * doctor's words, what is wrong and how to fix it.  The modules that meet the failure (sandbox,
 * proxy, dns) call explain_fail()/explain_warn() with the doctor check's key; the doctor module
 * (src/doctor/) installs the explainer at start (doctor_init()), so they need not depend on it.
 * Nothing is looked at before a failure: the happy path pays nothing.
 */
#ifndef CHILDFLOW_EXPLAIN_H
#define CHILDFLOW_EXPLAIN_H

#include <stdbool.h>

/* @fatal: a setup step failed (the run then exits 125); else a warning. */
typedef void (*explain_fn)(bool fatal, const char *key, int err, const char *what);

/* explain_set() - install @fn (NULL: the plain "what: strerror(err)" line). */
void explain_set(explain_fn fn);

/*
 * explain_fail() - the step @key (a doctor check's key) failed with @err (positive errno, or 0);
 * @what is the step's own words.  Prints the explanation; the caller fails the setup.
 */
void explain_fail(const char *key, int err, const char *what);

/* explain_warn() - the same for a condition the run survives (told once per cause by the caller). */
void explain_warn(const char *key, int err, const char *what);

#endif
