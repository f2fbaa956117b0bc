/* test_proactor_denied: when io_uring cannot be used (a seccomp filter makes
 * io_uring_setup fail with EPERM or ENOSYS, as container runtimes do),
 * pool_start fails cleanly with a message naming the cause and the fix. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#if defined(__x86_64__)
#define AUDIT_ARCH_SELF AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AUDIT_ARCH_SELF AUDIT_ARCH_AARCH64
#endif

/* Installs a filter that fails io_uring_setup with `err`; 0 or -errno. */
static int deny_io_uring(int err)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_SELF, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof(filter) / sizeof(filter[0]), .filter = filter};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -errno;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		return -errno;
	return 0;
}

/* In a child: deny io_uring with `err`, start a pool, and check the error
 * mentions `expect`.  Child exit: 0 ok, 1 wrong, 77 no seccomp here. */
static int child(int err, const char *expect)
{
	if (deny_io_uring(err) < 0)
		return 77;
	struct pool_config pc = {
		.threads = 2, .queue_size = 64, .px = {.entries = 64, .msg_budget = 64}, .quiet = true};
	struct pool *pool;
	char msg[512] = "";
	logging_level = LOG_LEVEL_ERROR;
	int ret = pool_start(&pool, &pc, msg, sizeof(msg));
	if (ret == 0) {
		fprintf(stderr, "FAIL: pool_start succeeded with io_uring_setup denied\n");
		pool_stop(pool);
		return 1;
	}
	printf("denied with %s: %s\n", strerror(err), msg);
	fflush(stdout);
	if (ret != -err || strstr(msg, expect) == NULL) {
		fprintf(stderr, "FAIL: got %d '%s', expected -%d and a message with '%s'\n", ret,
			msg, err, expect);
		return 1;
	}
	return 0;
}

int main(void)
{
#ifndef AUDIT_ARCH_SELF
	printf("seccomp filter not written for this architecture\n");
	return 77;
#else
	static const struct {
		int err;
		const char *expect;
	} cases[] = {{EPERM, "seccomp"}, {ENOSYS, "no io_uring"}};
	int disabled = -1;
	FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
	if (f != NULL) {
		if (fscanf(f, "%d", &disabled) != 1)
			disabled = -1;
		fclose(f);
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fflush(stdout);
		pid_t pid = fork();
		if (pid == 0)
			_exit(child(cases[i].err, cases[i].err == EPERM && disabled > 0
							  ? "io_uring_disabled"
							  : cases[i].expect));
		int status = 0;
		waitpid(pid, &status, 0);
		if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
			printf("cannot install a seccomp filter here\n");
			return 77;
		}
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "case %s failed (status %d)",
		      strerror(cases[i].err), status);
	}
	return test_result();
#endif
}
