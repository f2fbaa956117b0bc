/* cmd_conn: the connection commands (PING ECHO QUIT HELLO AUTH SELECT
 * CLIENT COMMAND RESET).  They run on the connection's proactor and touch
 * only its own client, except CLIENT LIST, which asks every proactor for its
 * clients. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

static const char hello_noauth[] =
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the"
    " HELLO AUTH <user> <pass> option can be used to authenticate the client and select"
    " the RESP protocol version at the same time";

void cmd_ping(struct cmd_ctx *x)
{
	if (cmd_argc(x) > 2) { /* arity -1 in the table, as Redis's: it checks here */
		cmd_fail_arity(x);
		return;
	}
	if (cmd_argc(x) == 2)
		resp_add_bulk(x->reply, cmd_arg(x, 1), cmd_arg_len(x, 1));
	else
		resp_add_simple(x->reply, "PONG");
	cmd_done(x);
}

void cmd_echo(struct cmd_ctx *x)
{
	resp_add_bulk(x->reply, cmd_arg(x, 1), cmd_arg_len(x, 1));
	cmd_done(x);
}

void cmd_quit(struct cmd_ctx *x)
{
	struct conn *c = x->conn;
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
	conn_close_after_reply(c);
}

/* Compares without stopping at the first difference (no timing hint of
 * how much of a password was right). */
static bool secret_equal(const uint8_t *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);
	unsigned diff = alen != blen;
	for (size_t i = 0; i < alen; i++)
		diff |= a[i] ^ (uint8_t)b[i % (blen ? blen : 1)];
	return diff == 0;
}

/* Redis's ACLAuthenticateUser for the only user, "default": without
 * requirepass it has no password (any password is accepted). */
static bool authenticate(const uint8_t *user, size_t ulen, const uint8_t *pass, size_t plen)
{
	if (ulen != 7 || memcmp(user, "default", 7) != 0)
		return false;
	const char *pw = cmd_requirepass();
	return pw[0] == '\0' || secret_equal(pass, plen, pw);
}

void cmd_auth(struct cmd_ctx *x)
{
	size_t argc = cmd_argc(x);
	if (argc > 3) {
		cmd_fail(x, cmd_err_syntax);
		return;
	}
	if (argc == 2 && cmd_requirepass()[0] == '\0') {
		cmd_fail(x, "ERR AUTH <password> called without any password configured for the"
		            " default user. Are you sure your configuration is correct?");
		return;
	}
	const uint8_t *user = argc == 2 ? (const uint8_t *)"default" : cmd_arg(x, 1);
	size_t ulen = argc == 2 ? 7 : cmd_arg_len(x, 1);
	if (!authenticate(user, ulen, cmd_arg(x, argc - 1), cmd_arg_len(x, argc - 1))) {
		cmd_fail(x, cmd_err_wrongpass);
		return;
	}
	x->conn->authenticated = true;
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

bool cmd_client_name_ok(const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] < '!' || s[i] > '~')
			return false;
	return true;
}

/* Sets (or, for "", clears) the client's name. */
static bool set_client_name(struct conn *c, const uint8_t *s, size_t len)
{
	char *name = NULL;
	if (len > 0) {
		name = malloc(len + 1);
		if (name == NULL)
			return false;
		memcpy(name, s, len);
		name[len] = '\0';
	}
	free(c->name);
	c->name = name;
	return true;
}

void cmd_hello(struct cmd_ctx *x)
{
	struct conn *c = x->conn;
	int64_t ver = 0;
	size_t j = 1;
	if (cmd_argc(x) >= 2) {
		if (!resp_parse_int64(cmd_arg(x, 1), cmd_arg_len(x, 1), &ver)) {
			cmd_fail(x, "ERR Protocol version is not an integer or out of range");
			return;
		}
		if (ver < 2 || ver > 3) {
			cmd_fail(x, "NOPROTO unsupported protocol version");
			return;
		}
		j = 2;
	}
	for (; j < cmd_argc(x); j++) {
		size_t more = cmd_argc(x) - 1 - j;
		if (cmd_arg_is(x, j, "auth") && more >= 2) {
			if (!authenticate(cmd_arg(x, j + 1), cmd_arg_len(x, j + 1),
			                  cmd_arg(x, j + 2), cmd_arg_len(x, j + 2))) {
				cmd_fail(x, cmd_err_wrongpass);
				return;
			}
			c->authenticated = true;
			j += 2;
		} else if (cmd_arg_is(x, j, "setname") && more >= 1) {
			if (!cmd_client_name_ok(cmd_arg(x, j + 1), cmd_arg_len(x, j + 1))) {
				cmd_fail(x, cmd_err_bad_name);
				return;
			}
			if (!set_client_name(c, cmd_arg(x, j + 1), cmd_arg_len(x, j + 1))) {
				cmd_fail(x, cmd_err_oom);
				return;
			}
			j++;
		} else {
			cmd_failf(x, "ERR Syntax error in HELLO option '%s'",
			          (const char *)cmd_arg(x, j));
			return;
		}
	}
	if (!c->authenticated) {
		cmd_fail(x, hello_noauth);
		return;
	}
	if (ver != 0) {
		c->proto = (uint8_t)ver;
		x->reply->proto = (uint8_t)ver; /* this reply is already in the new protocol */
	}
	struct resp_buf *b = x->reply;
	resp_add_map(b, 7);
	resp_add_bulk_str(b, "server");
	resp_add_bulk_str(b, "redis");
	resp_add_bulk_str(b, "version");
	resp_add_bulk_str(b, CMD_REDIS_VERSION);
	resp_add_bulk_str(b, "proto");
	resp_add_int(b, c->proto);
	resp_add_bulk_str(b, "id");
	resp_add_int(b, (int64_t)c->id);
	resp_add_bulk_str(b, "mode");
	resp_add_bulk_str(b, "standalone");
	resp_add_bulk_str(b, "role");
	resp_add_bulk_str(b, "master");
	resp_add_bulk_str(b, "modules");
	resp_add_array(b, 0);
	cmd_done(x);
}

void cmd_select(struct cmd_ctx *x)
{
	int64_t db;
	if (cmd_arg_int_or_fail(x, 1, &db) < 0)
		return;
	if (db < INT32_MIN || db > INT32_MAX) { /* Redis reads an int */
		cmd_fail(x, cmd_err_not_int);
		return;
	}
	if (db < 0 || db >= (int64_t)cmd_databases()) {
		cmd_fail(x, "ERR DB index is out of range");
		return;
	}
	x->conn->db = (unsigned)db;
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

void cmd_reset(struct cmd_ctx *x)
{
	struct conn *c = x->conn;
	set_client_name(c, NULL, 0);
	c->proto = 2;
	x->reply->proto = 2;
	c->authenticated = cmd_requirepass()[0] == '\0';
	c->db = 0;
	cmd_multi_reset(c);
	resp_add_simple(x->reply, "RESET");
	cmd_done(x);
}

/* ---- CLIENT ------------------------------------------------------------ */

/* Appends one CLIENT LIST line for c (Redis's field order; the fields that
 * have no meaning here are 0). */
static void client_line(struct resp_buf *out, struct conn *c)
{
	char addr[128], laddr[128], line[1024];
	uint64_t now = clock_unix_ms();
	conn_peer_string(c, addr, sizeof(addr));
	conn_local_string(c, laddr, sizeof(laddr));
	int n = snprintf(
	    line, sizeof(line),
	    "id=%llu addr=%s laddr=%s fd=%d name=%s age=%llu idle=%llu flags=N db=%u"
	    " sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0"
	    " rbs=0 rbp=0 obl=0 oll=0 omem=%llu tot-mem=0 events=r cmd=%s"
	    " user=default redir=-1 resp=%u\n",
	    (unsigned long long)c->id, addr, laddr, c->fd, c->name ? c->name : "",
	    (unsigned long long)(now > c->created_ms ? (now - c->created_ms) / 1000 : 0),
	    (unsigned long long)(now > c->last_active_ms ? (now - c->last_active_ms) / 1000 : 0),
	    c->db, (unsigned long long)c->output_bytes, c->last_cmd ? c->last_cmd : "NULL",
	    (unsigned)c->proto);
	if (n > 0)
		resp_buf_append(out, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void client_id(struct cmd_ctx *x)
{
	resp_add_int(x->reply, (int64_t)x->conn->id);
	cmd_done(x);
}

static void client_getname(struct cmd_ctx *x)
{
	if (x->conn->name != NULL)
		resp_add_bulk_str(x->reply, x->conn->name);
	else
		resp_add_null(x->reply);
	cmd_done(x);
}

static void client_setname(struct cmd_ctx *x)
{
	if (!cmd_client_name_ok(cmd_arg(x, 2), cmd_arg_len(x, 2))) {
		cmd_fail(x, cmd_err_bad_name);
		return;
	}
	if (!set_client_name(x->conn, cmd_arg(x, 2), cmd_arg_len(x, 2))) {
		cmd_fail(x, cmd_err_oom);
		return;
	}
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

static void client_info(struct cmd_ctx *x)
{
	struct resp_buf line;
	resp_buf_init(&line, 2);
	client_line(&line, x->conn);
	resp_add_verbatim(x->reply, line.data, line.len);
	resp_buf_free(&line);
	cmd_done(x);
}

/* CLIENT LIST's filter (in x->heap): TYPE and ID. */
struct list_filter {
	bool none;    /* TYPE master/replica/pubsub: no such clients here */
	size_t n_ids; /* 0 = every id */
	int64_t ids[];
};

static void list_one(struct conn *c, void *arg)
{
	struct cmd_part *p = arg;
	const struct list_filter *flt = p->fan->x->heap;
	if (flt != NULL && flt->none)
		return;
	if (flt != NULL && flt->n_ids > 0) {
		bool wanted = false;
		for (size_t i = 0; i < flt->n_ids && !wanted; i++)
			wanted = (uint64_t)flt->ids[i] == c->id;
		if (!wanted)
			return;
	}
	client_line(&p->text, c);
}

static void list_part(struct cmd_part *p)
{
	conn_foreach(px_current(), list_one, p);
	cmd_part_done(p);
}

static void list_finish(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	size_t len = 0;
	for (size_t i = 0; i < f->nparts; i++)
		len += f->parts[i].text.len;
	char *all = malloc(len + 1);
	if (all == NULL) {
		cmd_fan_free(f);
		cmd_fail(x, cmd_err_oom);
		return;
	}
	size_t off = 0;
	for (size_t i = 0; i < f->nparts; i++) {
		memcpy(all + off, f->parts[i].text.data, f->parts[i].text.len);
		off += f->parts[i].text.len;
	}
	resp_add_verbatim(x->reply, all, len);
	free(all);
	cmd_fan_free(f);
	cmd_done(x);
}

static void client_list(struct cmd_ctx *x)
{
	size_t argc = cmd_argc(x);
	struct list_filter *flt = calloc(1, sizeof(*flt) + argc * sizeof(int64_t));
	if (flt == NULL) {
		cmd_fail(x, cmd_err_oom);
		return;
	}
	x->heap = flt;
	if (argc == 4 && cmd_arg_is(x, 2, "type")) {
		if (cmd_arg_is(x, 3, "master") || cmd_arg_is(x, 3, "replica") ||
		    cmd_arg_is(x, 3, "slave") || cmd_arg_is(x, 3, "pubsub")) {
			flt->none = true;
		} else if (!cmd_arg_is(x, 3, "normal")) {
			cmd_failf(x, "ERR Unknown client type '%s'", (const char *)cmd_arg(x, 3));
			return;
		}
	} else if (argc >= 4 && cmd_arg_is(x, 2, "id")) {
		for (size_t i = 3; i < argc; i++)
			if (!resp_parse_int64(cmd_arg(x, i), cmd_arg_len(x, i),
			                      &flt->ids[flt->n_ids++]) ||
			    flt->ids[flt->n_ids - 1] < 1) {
				cmd_fail(x, "ERR Invalid client ID");
				return;
			}
	} else if (argc != 2) {
		cmd_fail(x, cmd_err_syntax);
		return;
	}
	cmd_fan_all(x, list_part, list_finish);
}

/* Replies a HELP text: one simple string per line. */
static void client_help(struct cmd_ctx *x)
{
	static const char *const lines[] = {
	    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
	    "GETNAME",
	    "    Return the name of the current connection.",
	    "ID",
	    "    Return the ID of the current connection.",
	    "INFO",
	    "    Return information about the current client connection.",
	    "LIST [TYPE <normal|master|replica|pubsub>] [ID <id> [<id> ...]]",
	    "    Return information about client connections.",
	    "SETNAME <name>",
	    "    Assign the name <name> to the current connection.",
	    "HELP",
	    "    Print this help.",
	    NULL,
	};
	cmd_reply_help(x, lines);
}

const struct cmd_def cmd_client_subcommands[] = {
    {"getname", client_getname, 2, CMD_NOSCRIPT | CMD_STALE | CMD_LOADING, 0, 0, 0, "connection", "2.6.9",
     "Get the current connection name", NULL, "client"},
    {"help", client_help, 2, CMD_STALE | CMD_LOADING, 0, 0, 0, "connection", "5.0.0",
     "Show helpful text about the different subcommands", NULL, "client"},
    {"id", client_id, 2, CMD_NOSCRIPT | CMD_STALE | CMD_LOADING, 0, 0, 0, "connection", "5.0.0",
     "Returns the client ID for the current connection", NULL, "client"},
    {"info", client_info, 2, CMD_NOSCRIPT | CMD_STALE | CMD_LOADING, 0, 0, 0, "connection", "6.2.0",
     "Returns information about the current client connection.", NULL, "client"},
    {"list", client_list, -2, CMD_NOSCRIPT | CMD_ADMIN | CMD_STALE | CMD_LOADING, 0, 0, 0, "connection", "2.4.0",
     "Get the list of client connections", NULL, "client"},
    {"setname", client_setname, 3, CMD_NOSCRIPT | CMD_STALE | CMD_LOADING, 0, 0, 0, "connection", "2.6.9",
     "Set the current connection name", NULL, "client"},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL},
};

void cmd_client(struct cmd_ctx *x)
{
	cmd_run_subcommand(x, cmd_client_subcommands);
}

/* ---- COMMAND ----------------------------------------------------------- */

static size_t count_defs(const struct cmd_def *t)
{
	size_t n = 0;
	while (t[n].name != NULL)
		n++;
	return n;
}

static void add_command_info(struct resp_buf *b, const struct cmd_def *d)
{
	static const struct {
		unsigned flag;
		const char *name;
	} flag_names[] = {
	    {CMD_WRITE, "write"}, {CMD_READONLY, "readonly"}, {CMD_DENYOOM, "denyoom"},
	    {CMD_ADMIN, "admin"}, {CMD_NOSCRIPT, "noscript"}, {CMD_NOAUTH, "no_auth"},
	    {CMD_LOADING, "loading"},
	    {CMD_STALE, "stale"}, {CMD_FAST, "fast"},
	};
	const char *cats[6];
	size_t ncats = 0, nflags = 0;
	char name[64];
	cmd_full_name(d, name, sizeof(name));
	for (size_t i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
		nflags += (d->flags & flag_names[i].flag) != 0;
	if (d->flags & CMD_WRITE)
		cats[ncats++] = "@write";
	if (d->flags & CMD_READONLY)
		cats[ncats++] = "@read";
	if (strcmp(d->group, "string") == 0)
		cats[ncats++] = "@string";
	else if (strcmp(d->group, "generic") == 0)
		cats[ncats++] = "@keyspace";
	else if (strcmp(d->group, "connection") == 0)
		cats[ncats++] = "@connection";
	if (d->flags & CMD_ADMIN) {
		cats[ncats++] = "@admin";
		cats[ncats++] = "@dangerous";
	}
	cats[ncats++] = d->flags & CMD_FAST ? "@fast" : "@slow";

	resp_add_array(b, 10);
	resp_add_bulk_str(b, name);
	resp_add_int(b, d->arity);
	resp_add_set(b, nflags);
	for (size_t i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
		if (d->flags & flag_names[i].flag)
			resp_add_simple(b, flag_names[i].name);
	resp_add_int(b, d->first_key);
	resp_add_int(b, d->last_key);
	resp_add_int(b, d->key_step);
	resp_add_set(b, ncats);
	for (size_t i = 0; i < ncats; i++)
		resp_add_simple(b, cats[i]);
	resp_add_array(b, 0); /* tips */
	resp_add_array(b, 0); /* key specs: first/last/step above say the same */
	size_t nsub = d->subcommands ? count_defs(d->subcommands) : 0;
	resp_add_array(b, nsub);
	for (size_t i = 0; i < nsub; i++)
		add_command_info(b, &d->subcommands[i]);
}

static void add_command_docs(struct resp_buf *b, const struct cmd_def *d)
{
	size_t nsub = d->subcommands ? count_defs(d->subcommands) : 0;
	resp_add_map(b, nsub > 0 ? 4 : 3);
	resp_add_bulk_str(b, "summary");
	resp_add_bulk_str(b, d->summary);
	resp_add_bulk_str(b, "since");
	resp_add_bulk_str(b, d->since);
	resp_add_bulk_str(b, "group");
	resp_add_bulk_str(b, d->group);
	if (nsub == 0)
		return;
	resp_add_bulk_str(b, "subcommands");
	resp_add_map(b, nsub);
	for (size_t i = 0; i < nsub; i++) {
		char name[64];
		cmd_full_name(&d->subcommands[i], name, sizeof(name));
		resp_add_bulk_str(b, name);
		add_command_docs(b, &d->subcommands[i]);
	}
}

/* The table entry for argument i ("get", or "client|list"), or NULL. */
static const struct cmd_def *find_def(const struct cmd_ctx *x, size_t i)
{
	const uint8_t *a = cmd_arg(x, i);
	size_t len = cmd_arg_len(x, i);
	const uint8_t *bar = memchr(a, '|', len);
	size_t head = bar ? (size_t)(bar - a) : len;
	for (const struct cmd_def *d = cmd_table; d->name != NULL; d++) {
		if (strlen(d->name) != head || strncasecmp(d->name, (const char *)a, head) != 0)
			continue;
		if (bar == NULL)
			return d;
		for (const struct cmd_def *s = d->subcommands; s && s->name; s++)
			if (strlen(s->name) == len - head - 1 &&
			    strncasecmp(s->name, (const char *)bar + 1, len - head - 1) == 0)
				return s;
		return NULL;
	}
	return NULL;
}

static void command_all(struct cmd_ctx *x)
{
	size_t n = count_defs(cmd_table);
	resp_add_array(x->reply, n);
	for (size_t i = 0; i < n; i++)
		add_command_info(x->reply, &cmd_table[i]);
	cmd_done(x);
}

static void command_count(struct cmd_ctx *x)
{
	resp_add_int(x->reply, (int64_t)count_defs(cmd_table));
	cmd_done(x);
}

static void command_info(struct cmd_ctx *x)
{
	if (cmd_argc(x) == 2) {
		command_all(x);
		return;
	}
	resp_add_array(x->reply, cmd_argc(x) - 2);
	for (size_t i = 2; i < cmd_argc(x); i++) {
		const struct cmd_def *d = find_def(x, i);
		if (d != NULL)
			add_command_info(x->reply, d);
		else
			resp_add_null_array(x->reply);
	}
	cmd_done(x);
}

static void command_docs(struct cmd_ctx *x)
{
	size_t n = 0;
	if (cmd_argc(x) == 2) {
		n = count_defs(cmd_table);
		resp_add_map(x->reply, n);
		for (size_t i = 0; i < n; i++) {
			resp_add_bulk_str(x->reply, cmd_table[i].name);
			add_command_docs(x->reply, &cmd_table[i]);
		}
		cmd_done(x);
		return;
	}
	for (size_t i = 2; i < cmd_argc(x); i++)
		n += find_def(x, i) != NULL;
	resp_add_map(x->reply, n);
	for (size_t i = 2; i < cmd_argc(x); i++) {
		const struct cmd_def *d = find_def(x, i);
		if (d == NULL)
			continue;
		char name[64];
		cmd_full_name(d, name, sizeof(name));
		resp_add_bulk_str(x->reply, name);
		add_command_docs(x->reply, d);
	}
	cmd_done(x);
}

static void command_list(struct cmd_ctx *x)
{
	if (cmd_argc(x) != 2) {
		cmd_fail(x, cmd_err_syntax);
		return;
	}
	size_t n = count_defs(cmd_table);
	resp_add_array(x->reply, n);
	for (size_t i = 0; i < n; i++)
		resp_add_bulk_str(x->reply, cmd_table[i].name);
	cmd_done(x);
}

static void command_help(struct cmd_ctx *x)
{
	static const char *const lines[] = {
	    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
	    "(no subcommand)",
	    "    Return details about all commands.",
	    "COUNT",
	    "    Return the total number of commands in this server.",
	    "LIST",
	    "    Return a list of all commands in this server.",
	    "INFO [<command-name> ...]",
	    "    Return details about multiple commands.",
	    "    If no command names are given, documentation details for all",
	    "    commands are returned.",
	    "DOCS [<command-name> ...]",
	    "    Return documentation details about multiple commands.",
	    "    If no command names are given, documentation details for all",
	    "    commands are returned.",
	    "HELP",
	    "    Print this help.",
	    NULL,
	};
	cmd_reply_help(x, lines);
}

const struct cmd_def cmd_command_subcommands[] = {
    {"count", command_count, 2, CMD_STALE | CMD_LOADING, 0, 0, 0, "server", "2.8.13",
     "Get total number of commands", NULL, "command"},
    {"docs", command_docs, -2, CMD_STALE | CMD_LOADING, 0, 0, 0, "server", "7.0.0",
     "Get array of specific command documentation", NULL, "command"},
    {"help", command_help, 2, CMD_STALE | CMD_LOADING, 0, 0, 0, "server", "5.0.0",
     "Show helpful text about the different subcommands", NULL, "command"},
    {"info", command_info, -2, CMD_STALE | CMD_LOADING, 0, 0, 0, "server", "2.8.13",
     "Get array of specific command details, or all when no argument is given", NULL, "command"},
    {"list", command_list, -2, CMD_STALE | CMD_LOADING, 0, 0, 0, "server", "7.0.0",
     "Get an array of command names", NULL, "command"},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL},
};

void cmd_command(struct cmd_ctx *x)
{
	if (cmd_argc(x) == 1) {
		command_all(x);
		return;
	}
	cmd_run_subcommand(x, cmd_command_subcommands);
}
