/* SPDX-License-Identifier: MIT */
/* explain — the hook through which setup failures are told in the doctor's words (explain.h). */
#include "util/explain.h"

#include <string.h>

#include "util/log.h"

static explain_fn explainer;

void explain_set(explain_fn fn)
{
	explainer = fn;
}

static void tell(bool fatal, const char *key, int err, const char *what)
{
	if (explainer) {
		explainer(fatal, key, err, what);
		return;
	}
	if (fatal)
		log_error("%s%s%s", what ? what : key, err ? ": " : "", err ? strerror(err) : "");
	else
		log_warn("%s%s%s", what ? what : key, err ? ": " : "", err ? strerror(err) : "");
}

void explain_fail(const char *key, int err, const char *what)
{
	tell(true, key, err, what);
}

void explain_warn(const char *key, int err, const char *what)
{
	tell(false, key, err, what);
}
