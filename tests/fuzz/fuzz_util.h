/* fuzz_util.h: what the libFuzzer targets of tests/fuzz/ share — a temporary
 * directory that is removed at exit, and the signal mask the proactor threads
 * start with. */
#ifndef RINGKV_FUZZ_UTIL_H
#define RINGKV_FUZZ_UTIL_H

#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/testutil.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline int fuzz_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* Removes `path` and everything below it. */
static inline void fuzz_rmtree(const char *path)
{
	nftw(path, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Makes a fresh directory "$TMPDIR/<name>.XXXXXX" (on a disk file system:
 * the log needs O_DIRECT) in buf.  Exits 77 (skip) on tmpfs, 1 on failure. */
static inline void fuzz_tmpdir(const char *name, char *buf, size_t len)
{
	const char *tmp = test_disk_tmpdir();
	if (tmp == NULL)
		exit(77);
	snprintf(buf, len, "%s/%s.XXXXXX", tmp, name);
	if (mkdtemp(buf) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
}

/* Blocks the asynchronous signals libFuzzer and the shell use (SIGALRM for
 * -timeout, SIGINT, SIGTERM, ...) in the calling thread and returns the old
 * mask: threads started meanwhile inherit it, so the signals reach
 * libFuzzer's thread only, as ringkv-server keeps them off its proactors.
 * Synchronous signals (SIGSEGV, ...) stay unblocked so sanitizers report
 * them. */
static inline sigset_t fuzz_block_signals(void)
{
	static const int sigs[] = {SIGALRM, SIGINT,  SIGTERM,   SIGHUP, SIGUSR1,
	                           SIGUSR2, SIGXCPU, SIGVTALRM, SIGPROF};
	sigset_t set, old;
	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&set, sigs[i]);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	return old;
}

#endif
