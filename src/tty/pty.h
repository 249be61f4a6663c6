/* SPDX-License-Identifier: MIT */
/*
 * tty/pty — the command's own terminal, relayed to the caller's (redteam F5).
 *
 * When one of fds 0-2 is a terminal, the command does not share it: P opens a pty pair before the
 * sandbox starts, the command runs in a session of its own with the slave as its controlling
 * terminal (so kill(0) and killpg() reach only its own tree), and P copies bytes between the
 * master and the caller's terminal, which it puts in raw mode while the command holds the pty.
 *
 * Life of a relay, as main.c drives it:
 *   pty_open()        before sandbox_start(): the pair (modes and size copied from the caller's
 *                     terminal), and the report pipe the command and init write to
 *   pty_started()     after sandbox_start(): P lets go of the slave and the pipe's write end
 *   pty_run()         each time pty_fd() is readable (a relay hook): bytes both ways; 'R' on the
 *                     pipe (the command holds the pty): raw mode; a stop report from init, or
 *                     SIGTSTP: the caller's modes back and childflow stops itself; SIGCONT: raw
 *                     again; SIGWINCH: the new size on the master
 *   pty_finish()      after the command tree is gone: the master's last bytes, the caller's modes
 *   pty_free()
 * After SIGKILL of childflow a watchdog (forked by pty_started()) puts the caller's modes back.
 */
#ifndef CHILDFLOW_TTY_PTY_H
#define CHILDFLOW_TTY_PTY_H

#include <stdbool.h>

struct pty_relay;

/* What the command's side needs (sandbox_config copies it). */
struct pty_child {
	int slave;            /* the slave, to become the command's controlling terminal */
	int report;           /* write end of the report pipe (non-blocking) */
	unsigned int fds;     /* bit N: fd N (0-2) is the caller's terminal and becomes the slave */
	char path[64];        /* the caller's terminal's path, or "" when it has none */
};

/* Bytes on the report pipe: PTY_READY from the command once it holds the pty; else the number of
 * the signal that stopped the command (from init). */
#define PTY_READY 'R'

/* pty_run()'s answer: bit set when the command must be continued (SIGCONT through init). */
#define PTY_EV_CONTINUE 1u

/*
 * pty_open() - when one of fds 0-2 is a terminal, open the command's pty.
 * Return: 0 with *@out NULL (no terminal, or a warning was printed and nothing changes), 0 with
 * *@out and *@child filled, or -1 after one error line.
 */
int pty_open(struct pty_relay **out, struct pty_child *child);

/* pty_started() - the sandbox has its copies: close P's slave and the pipe's write end.
 * Return: 0 or -errno. */
int pty_started(struct pty_relay *pr);

/* The fd to watch for EPOLLIN; pty_run() handles it. */
int pty_fd(const struct pty_relay *pr);

/* pty_run() - copy what can be copied, handle reports and signals.  Never blocks, except while
 * childflow is stopped.  Return: PTY_EV_* bits. */
unsigned int pty_run(struct pty_relay *pr);

/* pty_finish() - write the master's last bytes (bounded in time) and restore the caller's modes. */
void pty_finish(struct pty_relay *pr);

/* Restores the caller's modes if still changed, closes everything.  NULL is fine. */
void pty_free(struct pty_relay *pr);

#endif
