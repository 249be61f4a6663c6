/*
 * libFuzzer target: the command-line parser.
 *
 * The input is split at NUL bytes into argv words (the first word is a proxy URI also given to
 * cli_parse_proxy() directly).  Any crash, sanitizer report, or a successful parse that violates the
 * contract (command words outside argv, an unterminated error message) is a finding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

#define MAX_WORDS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	char *argv[MAX_WORDS + 2];
	struct cli_options opt;
	struct proxy_spec proxy;
	char err[CLI_ERR_MAX];
	int argc = 1;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';

	memset(err, 'x', sizeof(err));
	if (cli_parse_proxy(buf, &proxy, err, sizeof(err)) < 0 && !memchr(err, '\0', sizeof(err)))
		abort();

	argv[0] = "childflow";
	for (size_t i = 0; i <= size && argc <= MAX_WORDS; ) {
		argv[argc++] = buf + i;
		i += strlen(buf + i) + 1;
	}
	argv[argc] = NULL;
	memset(err, 'x', sizeof(err));
	if (cli_parse(argc, argv, &opt, err, sizeof(err)) < 0) {
		if (!memchr(err, '\0', sizeof(err)))
			abort();
	} else if (opt.action == CLI_RUN) {
		/* The command is a tail of argv, NULL-terminated. */
		if (opt.argc < 1 || opt.argv < argv + 1 || opt.argv + opt.argc != argv + argc || opt.argv[opt.argc])
			abort();
	}
	free(buf);
	return 0;
}
