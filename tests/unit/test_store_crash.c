/* test_store_crash: a writer process is SIGKILLed at random moments, many
 * times; after each kill a fresh process reopens the store and checks that
 * every write the writer saw acknowledged under `fsync` and `write` is there,
 * that no value is ever corrupt, that what survived is a prefix of what
 * was written (in every durability mode), and that each database's key count
 * is what it holds (writes go to DATABASES databases). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/store.h"
#include "testutil.h"

#define WINDOW 64             /* writes in flight in the writer */
#define MAX_SEQ (1u << 20)    /* bound on writes per run */
#define DATABASES 3             /* write `seq` goes to database seq % DATABASES */

static char dir[512];
static enum log_durability durability;

/* ---- values that check themselves -------------------------------------- */

/* The value of write `seq`: "seq=<hex>;" then filler derived from seq.  Sizes
 * vary from inline to several KiB, so commits hold a few records or many. */
static size_t make_value(uint32_t seq, char *buf)
{
	size_t len = 16 + (seq * 2654435761u) % (seq % 7 == 0 ? 6000 : 200);
	int n = snprintf(buf, 32, "seq=%08x;", seq);
	for (size_t i = (size_t)n; i < len; i++)
		buf[i] = (char)('a' + (seq + i) % 26);
	return len;
}

static void key_of(uint32_t seq, char *buf)
{
	snprintf(buf, 32, "key:%08x", seq);
}

/* ---- the writer (child, killed) ----------------------------------------- */

struct writer {
	struct store *st;
	int ack_fd;          /* acknowledged seqs go here, 4 bytes each */
	uint32_t next_seq;
	unsigned inflight;
};

struct wreq {
	struct store_req req;
	struct writer *w;
	uint32_t seq;
	char key[32];
	char value[8192];
};

static void writer_pump(struct writer *w);

static void write_acked(struct store_req *req)
{
	struct wreq *r = container_of(req, struct wreq, req);
	struct writer *w = r->w;
	if (req->status == 0 && write(w->ack_fd, &r->seq, sizeof(r->seq)) != sizeof(r->seq))
		_exit(3);
	w->inflight--;
	free(r);
	writer_pump(w);
}

static void writer_pump(struct writer *w)
{
	while (w->inflight < WINDOW && w->next_seq < MAX_SEQ) {
		struct wreq *r = calloc(1, sizeof(*r));
		r->w = w;
		r->seq = w->next_seq++;
		key_of(r->seq, r->key);
		r->req.op = STORE_PUT;
		r->req.db = r->seq % DATABASES;
		r->req.key = (const uint8_t *)r->key;
		r->req.key_len = strlen(r->key);
		r->req.value = (const uint8_t *)r->value;
		r->req.value_len = make_value(r->seq, r->value);
		r->req.done = write_acked;
		w->inflight++;
		store_submit(w->st, &r->req);
	}
}

static struct writer the_writer;
static struct px_timer checkpoint_timer;

/* Flushes the index now and then, so crashes hit recovery from a mid-stream
 * applied_lsn, not only from an empty index. */
static void checkpoint_tick(struct px *px, struct px_timer *t)
{
	(void)px;
	(void)t;
	store_checkpoint(the_writer.st);
}
static struct idx_shared *shared;
static atomic_int opened; /* 1 ok, -1 failed */

/* Opens the store as the writer and the verifier both must: the same
 * configuration, the durability under test.  Returns store_open's result. */
static int open_test_store(struct store **out, const char *who)
{
	struct store_config cfg = {.dir = dir,
	                           .databases = DATABASES,
	                           .segment_size = 1u << 20,
	                           .durability = durability,
	                           .inline_max = 64,
	                           .cache_bytes = 1u << 20,
	                           .shared = shared};
	char err[512];
	int ret = store_open(out, px_current(), &cfg, err, sizeof(err));
	if (ret < 0)
		fprintf(stderr, "%s: store_open: %s\n", who, err);
	return ret;
}

static void writer_start(void *arg)
{
	(void)arg;
	if (open_test_store(&the_writer.st, "writer") < 0) {
		atomic_store(&opened, -1);
		return;
	}
	atomic_store(&opened, 1);
	px_timer_start(px_current(), &checkpoint_timer, 10000000, 10000000, checkpoint_tick);
	writer_pump(&the_writer);
}

/* Runs until killed.  Starts numbering at `first_seq`. */
static void run_writer(int ack_fd, uint32_t first_seq)
{
	char err[256];
	if (idx_shared_create(&shared, 8u << 20, 2, err, sizeof(err)) < 0)
		_exit(2);
	struct pool *pool = test_pool(1, 256, 50, 256);
	the_writer.ack_fd = ack_fd;
	the_writer.next_seq = first_seq;
	pool_run_on(pool, 0, writer_start, NULL);
	for (;;) {
		if (atomic_load(&opened) < 0)
			_exit(2);
		pause();
	}
}

/* ---- the verifier (child, runs to the end) ----------------------------- */

struct vreq {
	struct store_req req;
	uint32_t seq;
	char key[32];
};

/* Shared with the children (MAP_SHARED): */
static uint8_t *acked;   /* [seq]: 1 the writer saw it acknowledged; 2 a verifier found it
			    (from then on it must survive every later crash, in any mode) */
static uint8_t *present; /* [seq]: the last verifier found it with its correct value */
static atomic_ulong checked, corrupt;
static uint32_t n_seq;       /* seqs to check: [0, n_seq) */
static uint32_t cycle_first; /* the killed writer wrote from this seq on */
static bool full_check;      /* check every earlier seq too (else every 16th) */

/* Whether the verifier reads `seq`: all of this cycle's, and of earlier
 * cycles all on a full check, else a sample (keeps the test to minutes). */
static bool seq_checked(uint32_t seq)
{
	return seq >= cycle_first || full_check || seq % 16 == 0;
}
static struct store *vstore;

static void verify_done(struct store_req *req)
{
	struct vreq *v = container_of(req, struct vreq, req);
	if (req->status == 0) {
		char expect[8192];
		size_t len = make_value(v->seq, expect);
		if (req->result_len != len || memcmp(req->result, expect, len) != 0)
			atomic_fetch_add(&corrupt, 1);
		else
			present[v->seq] = 1;
	} else if (req->status != -ENOENT) {
		atomic_fetch_add(&corrupt, 1);
	}
	free(v);
	atomic_fetch_add(&checked, 1);
}

static void verify_start(void *arg)
{
	(void)arg;
	if (open_test_store(&vstore, "verifier") < 0)
		_exit(1);
	for (uint32_t s = 0; s < n_seq; s++) {
		if (!seq_checked(s)) {
			atomic_fetch_add(&checked, 1);
			continue;
		}
		struct vreq *v = calloc(1, sizeof(*v));
		v->seq = s;
		key_of(s, v->key);
		v->req.op = STORE_GET;
		v->req.db = s % DATABASES;
		v->req.key = (const uint8_t *)v->key;
		v->req.key_len = strlen(v->key);
		v->req.done = verify_done;
		store_submit(vstore, &v->req);
	}
}

static atomic_ulong vcount[DATABASES]; /* the store's key count of each database */
static void verify_count(void *arg)
{
	(void)arg;
	for (unsigned d = 0; d < DATABASES; d++)
		atomic_store(&vcount[d], store_key_count(vstore, d));
}

/* Checks the store against acked[0..n_seq).  Exit status 0 ok, 1 failed. */
static int run_verifier(void)
{
	char err[256];
	if (idx_shared_create(&shared, 8u << 20, 2, err, sizeof(err)) < 0)
		return 1;
	memset(present, 0, MAX_SEQ);
	struct pool *pool = test_pool(1, 256, 50, 256);
	pool_run_on(pool, 0, verify_start, NULL);
	if (!test_wait_count(&checked, n_seq, 120)) {
		fprintf(stderr, "FAIL: verification reads did not finish\n");
		return 1;
	}
	test_on_px(pool, verify_count, NULL);
	test_store_close(pool, vstore);
	pool_stop(pool);
	idx_shared_destroy(shared);

	uint32_t lost = 0, holes = 0, last = cycle_first;
	for (uint32_t s = cycle_first; s < n_seq; s++)
		if (present[s])
			last = s;
	for (uint32_t s = 0; s < n_seq; s++) {
		bool must = seq_checked(s) &&
			    (acked[s] == 2 || (acked[s] == 1 && durability != LOG_DURABILITY_NONE));
		if (must && !present[s])
			lost++;
		if (s >= cycle_first && s < last && !present[s])
			holes++;
	}
	uint64_t n_present[DATABASES] = {0};
	for (uint32_t s = 0; s < n_seq; s++)
		n_present[s % DATABASES] += present[s];
	bool count_wrong = false;
	for (unsigned d = 0; d < DATABASES && full_check; d++) {
		/* (a full check reads every key the test ever wrote) */
		if (atomic_load(&vcount[d]) == n_present[d])
			continue;
		count_wrong = true;
		fprintf(stderr, "FAIL: the store counts %lu keys in database %u, %lu are there\n",
		        atomic_load(&vcount[d]), d, (unsigned long)n_present[d]);
	}
	if (atomic_load(&corrupt))
		fprintf(stderr, "FAIL: %lu values corrupt\n", atomic_load(&corrupt));
	if (lost)
		fprintf(stderr, "FAIL: %u acknowledged writes lost\n", lost);
	if (holes)
		fprintf(stderr, "FAIL: %u writes missing before the last surviving one: not a prefix\n",
			holes);
	return atomic_load(&corrupt) || lost || holes || count_wrong;
}

/* ---- the driver (no threads of its own, so fork is safe) ---------------- */

static int one_cycle(unsigned cycle, unsigned *seed, uint32_t *next_seq)
{
	int fds[2];
	if (pipe(fds) != 0)
		return 1;
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		run_writer(fds[1], *next_seq);
	}
	close(fds[1]);
	/* Let it run 20..300 ms, reading acknowledgements all along. */
	long run_ms = 20 + rand_r(seed) % 280;
	double kill_at = test_now() + run_ms / 1000.0;
	uint32_t got = 0;
	for (;;) {
		double left = kill_at - test_now();
		if (left <= 0)
			break;
		struct pollfd p = {.fd = fds[0], .events = POLLIN};
		if (poll(&p, 1, (int)(left * 1000) + 1) > 0) {
			uint32_t seqs[1024];
			ssize_t n = read(fds[0], seqs, sizeof(seqs));
			if (n <= 0)
				break;
			for (ssize_t i = 0; i < n / 4; i++) {
				acked[seqs[i]] = 1;
				got++;
			}
		}
	}
	kill(pid, SIGKILL);
	int status;
	waitpid(pid, &status, 0);
	uint32_t seqs[1024];
	ssize_t n;
	while ((n = read(fds[0], seqs, sizeof(seqs))) > 0)
		for (ssize_t i = 0; i < n / 4; i++) {
			acked[seqs[i]] = 1;
			got++;
		}
	close(fds[0]);
	if (!WIFSIGNALED(status)) {
		fprintf(stderr, "FAIL: cycle %u: the writer exited on its own (status %d)\n", cycle,
			status);
		return 1;
	}
	uint32_t max_acked = 0;
	for (uint32_t s = 0; s < MAX_SEQ; s++)
		if (acked[s])
			max_acked = s + 1;
	n_seq = max_acked > *next_seq ? max_acked : *next_seq;
	n_seq += WINDOW * 4; /* unacknowledged writes may have landed too */
	if (n_seq > MAX_SEQ)
		n_seq = MAX_SEQ;

	cycle_first = *next_seq;
	pid = fork();
	if (pid == 0)
		_exit(run_verifier());
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "FAIL: cycle %u: verification failed (status %d)\n", cycle, status);
		return 1;
	}
	uint32_t survived = 0;
	for (uint32_t s = cycle_first; s < n_seq; s++)
		if (present[s]) {
			acked[s] = 2;
			survived += s >= cycle_first;
		}
	printf("  cycle %u: killed after %ld ms; %u writes acknowledged, %u survived\n", cycle,
	       run_ms, got, survived);
	fflush(stdout);
	/* The next writer continues after everything written so far, so the
	 * keys of one run never collide with another's. */
	*next_seq = n_seq;
	return 0;
}

int main(void)
{
	unsigned seed = (unsigned)time(NULL);
	const char *tmp = test_disk_tmpdir();
	if (tmp == NULL)
		return 77;
	acked = mmap(NULL, MAX_SEQ, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	present = mmap(NULL, MAX_SEQ, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (acked == MAP_FAILED || present == MAP_FAILED)
		return 1;
	unsigned cycles = (unsigned)test_scaled(8);
	static const enum log_durability modes[] = {LOG_DURABILITY_FSYNC, LOG_DURABILITY_WRITE,
						    LOG_DURABILITY_NONE};
	static const char *names[] = {"fsync", "write", "none"};
	printf("seed %u\n", seed);
	int failed = 0;
	for (size_t m = 0; m < 3 && !failed; m++) {
		durability = modes[m];
		snprintf(dir, sizeof(dir), "%s/ringkv-test-crash-%d-%s", tmp, (int)getpid(),
			 names[m]);
		memset(acked, 0, MAX_SEQ);
		uint32_t next_seq = 0;
		printf("durability %s: %u kill cycles\n", names[m], cycles);
		fflush(stdout);
		for (unsigned c = 0; c < cycles && !failed; c++) {
			full_check = c + 1 == cycles;
			failed = one_cycle(c, &seed, &next_seq);
		}
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
	return failed;
}
