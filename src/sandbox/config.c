/* SPDX-License-Identifier: MIT */
/*
 * config — what the command inherits from the caller, recorded by P before it changes anything
 * (blocks signals, opens fds): the fds >= 3 handed over on purpose, the signal dispositions and
 * mask, the process-group decision, the environment's id-map choice and the caller's runtime
 * directory.
 */
#include "sandbox/internal.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "util/log.h"

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* The fds (>= 3) the caller gave us on purpose pass on to the command; nothing of ours does. */
static void record_inherited_fds(struct sandbox_config *cfg)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	cfg->n_keep_fds = 0;
	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);

		if (*end || e->d_name[0] == '.' || fd < 3 || fd == dirfd(d))
			continue;
		if (cfg->n_keep_fds < SANDBOX_MAX_KEEP_FDS)
			cfg->keep_fds[cfg->n_keep_fds++] = (int)fd;
		else
			log_warn("more than %d inherited file descriptors: fd %ld will not reach the command",
				 SANDBOX_MAX_KEEP_FDS, fd);
	}
	closedir(d);
	qsort(cfg->keep_fds, (size_t)cfg->n_keep_fds, sizeof(int), cmp_int);
}

/*
 * record_runtime_dir() - the caller's $XDG_RUNTIME_DIR (else /run/user/UID), resolved, when it is a
 * directory the caller owns and not "/": what hide.c may cover.  Anything else is left alone.
 */
static void record_runtime_dir(struct sandbox_config *cfg)
{
	const char *env = getenv("XDG_RUNTIME_DIR");
	char given[PATH_MAX], real[PATH_MAX];
	struct stat st;

	cfg->runtime_dir[0] = '\0';
	if (env && *env)
		snprintf(given, sizeof(given), "%s", env);
	else
		snprintf(given, sizeof(given), "/run/user/%u", (unsigned int)getuid());
	if (given[0] != '/' || !realpath(given, real) || strcmp(real, "/") == 0 ||
	    strlen(real) >= sizeof(cfg->runtime_dir) || stat(real, &st) < 0 || !S_ISDIR(st.st_mode) ||
	    st.st_uid != getuid())
		return;
	memcpy(cfg->runtime_dir, real, strlen(real) + 1);
}

static void record_signals(struct sandbox_config *cfg)
{
	sigemptyset(&cfg->orig_ignored);
	for (int s = 1; s < NSIG; s++) {
		struct sigaction sa;

		if (sigaction(s, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
			sigaddset(&cfg->orig_ignored, s);
	}
	sigprocmask(SIG_SETMASK, NULL, &cfg->orig_mask);
}

int sandbox_config_init(struct sandbox_config *cfg, char **argv, bool ipv6)
{
	const char *uidmap = getenv("CHILDFLOW_UIDMAP");
	const char *delay = getenv("CHILDFLOW_TEST_DELAY_INIT_PID_US");

	memset(cfg, 0, sizeof(*cfg));
	if (idmap_choice_parse(uidmap, &cfg->idmap) < 0) {
		log_error("error: CHILDFLOW_UIDMAP must be auto, direct or helper (not \"%s\")", uidmap);
		return -1;
	}
	cfg->argv = argv;
	cfg->ipv6 = ipv6;
	cfg->caller_is_root = getuid() == 0 && geteuid() == 0;
	/* Test hook: widen the window between init's creation and the publication of its pid, to
	 * show that no signal is lost in it.  Only delays the setup; bounded to 2 s. */
	if (delay) {
		unsigned long us = strtoul(delay, NULL, 10);

		cfg->test_delay_init_pid_us = us > 2000000 ? 2000000 : (unsigned int)us;
	}
	record_inherited_fds(cfg);
	record_signals(cfg);
	record_runtime_dir(cfg);
	/*
	 * kill(0, sig) from the command reaches its process group, across the PID namespace.  When
	 * childflow leads its own group (an interactive shell made one for this job), that group holds
	 * only childflow's processes and sharing it keeps terminal job control working.  Otherwise (a
	 * script, a supervisor) the group holds the caller's other processes: without a terminal to
	 * share, the command gets a group of its own.
	 */
	cfg->own_pgrp = getpgrp() != getpid() && !isatty(STDIN_FILENO);
	return 0;
}
