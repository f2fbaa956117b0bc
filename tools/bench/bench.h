/* bench: the subcommands of ringkv-bench.
 *
 * Each subcommand is one function with main's contract: it receives the
 * arguments from its own name on (argv[0] is "msg", "store", ...), prints its
 * results on stdout and its progress on stderr, and returns the exit status:
 * 0 success, 1 the measured system misbehaved or could not start, 2 usage
 * error.  ringkv_bench.c lists them in its command table.
 */
#ifndef RINGKV_BENCH_H
#define RINGKV_BENCH_H

#include <stdbool.h>
#include <stdint.h>

/* `ringkv-bench msg`: message-passing throughput, latency and wake-ups
 * (bench_msg.c). */
int bench_msg_main(int argc, char **argv);

/* `ringkv-bench store`: the storage library's puts and cold gets against fio
 * and RocksDB's db_bench (bench_store.c). */
int bench_store_main(int argc, char **argv);

/* `ringkv-bench resp`: a RESP load generator — units of several commands,
 * mixes, key distributions, fixed-rate latency — against any RESP server
 * (bench_resp.c; its parts are declared at the end of this file). */
int bench_resp_main(int argc, char **argv);

/* Helpers shared by the subcommands (ringkv_bench.c). */

/* Sleeps `ns` nanoseconds (< 1 s), resuming after signals. */
void bench_sleep_ns(long ns);

/* Parses a decimal integer in [min, max] into *out; false if s is anything
 * else (sign, junk, overflow). */
bool bench_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Median of the n values that are not NaN (NaN if there are none); v is left
 * unchanged. */
double bench_median(const double *v, unsigned n);

/* ---- `ringkv-bench resp`: the parts its files share ----------------------
 *
 * bench_resp.c        options, --help, the output line and --json
 * bench_resp_gen.c    what is sent: unit templates, key distributions, values
 * bench_resp_stats.c  what comes back: the reply parser, latency histograms
 * bench_resp_loop.c   the threads, each an io_uring event loop, and progress
 */

#define RB_KEY_DIGITS     12               /* key:000000001234, as redis-benchmark -r */
#define RB_KEYSPACE_MAX   1000000000000ull /* keys that fit RB_KEY_DIGITS */
#define RB_VALUE_MAX      (64u << 20)      /* --value-size limit, bytes */
#define RB_ARG_VALUES_MAX 8                /* __value__ placeholders in one argument */

/* xoshiro256**: one per thread, seeded from --seed and the thread's number. */
struct rb_rng {
	uint64_t s[4];
};
void rb_rng_seed(struct rb_rng *r, uint64_t seed);
uint64_t rb_rng_next(struct rb_rng *r);
uint64_t rb_rng_below(struct rb_rng *r, uint64_t n); /* uniform in [0, n), n > 0 */
double rb_rng_unit(struct rb_rng *r);                /* uniform in [0, 1) */

/* Which key number a __key__ becomes (--dist). */
enum rb_dist_kind { RB_DIST_UNIFORM, RB_DIST_ZIPF, RB_DIST_SEQ };

struct rb_dist {
	enum rb_dist_kind kind;
	uint64_t n;   /* keyspace */
	double theta; /* zipf exponent */
	/* zipf: rejection-inversion constants (rb_dist_init) */
	double h_x1, h_n, s;
	/* zipf: the Feistel permutation that scatters ranks over the keyspace */
	unsigned half_bits;
	uint64_t half_mask, round_keys[4];
};

/* Parses "uniform", "zipf:S" or "seq" for keyspace n; false (with *why set
 * to what is wrong) if spec is anything else. */
bool rb_dist_init(struct rb_dist *d, const char *spec, uint64_t n, const char **why);

/* Per-thread generator state: what draws keys, value sizes and mix entries. */
struct rb_gen {
	struct rb_rng rng;
	const struct rb_dist *dist;
	uint64_t seq;                      /* the next key of --dist seq (wraps at n) */
	uint32_t vmin, vmax;               /* value sizes, bytes */
	const char *value;                 /* vmax bytes of value content */
	uint32_t vsize[RB_ARG_VALUES_MAX]; /* sizes drawn for the argument being written */
};

uint64_t rb_dist_draw(struct rb_gen *g); /* a key number in [0, n) */

/* One compiled unit template: commands as RESP, with ops for the parts that
 * vary (rb_unit_encode). */
struct rb_op;
struct rb_unit {
	const char *src; /* as given, for messages and --json */
	uint64_t weight; /* in a --mix */
	unsigned ncmds;  /* replies the unit waits for */
	struct rb_op *ops;
	unsigned nops;
	char *text;     /* literal bytes the ops point into */
	size_t max_len; /* longest encoding */
};

/* The units of a --mix (or the one --unit), picked by weight. */
struct rb_mix {
	struct rb_unit *units;
	unsigned n;
	uint64_t total_weight;
};

/* Compiles "CMD ARG...;CMD ARG..." (arguments split on spaces; __key__ and
 * __rand_int__ draw a key, __value__ a value) and adds it to m with weight w.
 * False with *why set if the template is unusable. */
bool rb_mix_add(struct rb_mix *m, const char *spec, uint64_t weight, uint32_t vmax,
                const char **why);
void rb_mix_free(struct rb_mix *m);
const struct rb_unit *rb_mix_pick(const struct rb_mix *m, struct rb_gen *g);

/* Writes one unit at out (u->max_len bytes available), drawing its keys and
 * values now; returns the end of what it wrote. */
char *rb_unit_encode(const struct rb_unit *u, struct rb_gen *g, char *out);

/* Latency histogram, HdrHistogram-like: nanoseconds, exact below 256 ns, then
 * 128 linear buckets per power of two (< 0.8 % error) up to 2^36 ns (68 s). */
#define RB_HIST_SUB_BITS 7
#define RB_HIST_MAX_BITS 36
#define RB_HIST_BUCKETS  ((RB_HIST_MAX_BITS - RB_HIST_SUB_BITS + 1) << RB_HIST_SUB_BITS)

struct rb_hist {
	uint64_t count, sum_ns, min_ns, max_ns;
	uint64_t bucket[RB_HIST_BUCKETS];
};
void rb_hist_reset(struct rb_hist *h);
void rb_hist_add(struct rb_hist *h, uint64_t ns);
void rb_hist_merge(struct rb_hist *into, const struct rb_hist *from);
uint64_t rb_hist_quantile(const struct rb_hist *h, double q); /* ns; 0 if empty */

/* Streaming RESP reply parser, one per connection: it consumes bytes as they
 * arrive (bulk bodies need not be held whole) and tells when a top-level
 * reply ends.  RESP2, plus RESP3's scalar, map and set types. */
#define RB_REPLY_DEPTH_MAX 32

struct rb_reply {
	unsigned depth;                   /* aggregates open */
	int64_t left[RB_REPLY_DEPTH_MAX]; /* elements still due in each */
	uint64_t skip;                    /* bulk bytes (with CRLF) still due */
	uint64_t errors;                  /* error replies, nested ones too */
	const char *error;                /* set to the text of an error reply */
	size_t error_len;                 /* (points into the buffer parsed) */
};

enum rb_reply_status {
	RB_REPLY_DONE,      /* a top-level reply ended; *used bytes consumed */
	RB_REPLY_MORE,      /* *used bytes consumed, the rest is a partial line */
	RB_REPLY_MALFORMED, /* not RESP (or nested too deep); *used is where */
};
enum rb_reply_status rb_reply_next(struct rb_reply *p, const char *buf, size_t len, size_t *used);

/* What rb_run does (set by bench_resp.c from the options). */
struct rb_cfg {
	const char *host;
	uint16_t port;
	unsigned threads, conns, pipeline;
	uint64_t units;       /* over all threads; 0 when duration_ns is set */
	uint64_t duration_ns; /* 0 when counting units */
	double rate;          /* units/s over all connections; 0: as fast as possible */
	uint64_t seed;
	struct rb_mix mix; /* no units: the fill is the measured phase */
	struct rb_dist dist;
	uint64_t keyspace;
	uint32_t vmin, vmax;
	bool fill;
	bool progress; /* the line a second on stderr */
};

/* The figures of one phase (the fill, the measured run). */
struct rb_result {
	uint64_t units, errors;
	double seconds;
	struct rb_hist *hist; /* merged over the threads; rb_run allocates it */
	char first_error[160];
};

/* Connects, fills if asked, runs the workload; returns 0, or 1 when the
 * server could not be reached or misbehaved (the reason printed). */
int rb_run(const struct rb_cfg *cfg, struct rb_result *fill, struct rb_result *run);

#endif
