/* conn_clients: the client list and the counters (CLIENT LIST, INFO
 * clients and stats), the process-wide registry of every proactor's net
 * state, address formatting (conn_int.h has the map). */
#include "conn_int.h"

#include <arpa/inet.h>

/* The registry: every proactor's net state and the counters of those gone.
 * net_lock guards net_all, net_retired and conn_listen.c's net_claimed. */
pthread_mutex_t net_lock = PTHREAD_MUTEX_INITIALIZER;
struct net_px *net_all;       /* every live net_px */
struct net_stats net_retired; /* counters of net_px that are gone */
atomic_uint net_nclients;     /* open connections, all proactors */
atomic_uint net_nallocated;   /* connections not yet freed, all proactors */

/* "ip:port", or "[ip6]:port" as Redis writes IPv6 peers. */
void net_format_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		port = ntohs(a->sin_port);
		snprintf(buf, len, "%s:%u", ip, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		port = ntohs(a->sin6_port);
		snprintf(buf, len, "[%s]:%u", ip, port);
	} else {
		snprintf(buf, len, "?:0");
	}
}

void conn_peer_string(const struct conn *c, char *buf, size_t len)
{
	net_format_addr(&c->peer, buf, len);
}

void conn_local_string(const struct conn *c, char *buf, size_t len)
{
	net_format_addr(&c->local, buf, len);
}

void conn_foreach(struct px *px, void (*fn)(struct conn *c, void *arg), void *arg)
{
	struct net_px *np = net_self;
	(void)px;
	if (np == NULL)
		return;
	for (struct conn_private *pv = np->open, *next; pv != NULL; pv = next) {
		next = pv->open_next;
		fn(pv->c, arg);
	}
}

/* ---- counters ---------------------------------------------------------- */

/* Adds one proactor's counters to sum. */
void np_stats_fold(struct net_stats *sum, const struct net_counters *s)
{
	sum->connections_received +=
	    atomic_load_explicit(&s->connections_received, memory_order_relaxed);
	sum->rejected_connections +=
	    atomic_load_explicit(&s->rejected_connections, memory_order_relaxed);
	sum->commands += atomic_load_explicit(&s->commands, memory_order_relaxed);
	sum->net_input_bytes += atomic_load_explicit(&s->net_input_bytes, memory_order_relaxed);
	sum->net_output_bytes += atomic_load_explicit(&s->net_output_bytes, memory_order_relaxed);
	sum->reads += atomic_load_explicit(&s->reads, memory_order_relaxed);
	sum->sends += atomic_load_explicit(&s->sends, memory_order_relaxed);
	sum->protocol_errors += atomic_load_explicit(&s->protocol_errors, memory_order_relaxed);
	sum->output_limit_disconnects +=
	    atomic_load_explicit(&s->output_limit_disconnects, memory_order_relaxed);
	sum->timeouts += atomic_load_explicit(&s->timeouts, memory_order_relaxed);
}

void net_get_stats(struct net_stats *out)
{
	pthread_mutex_lock(&net_lock);
	*out = net_retired;
	for (struct net_px *np = net_all; np != NULL; np = np->all_next)
		np_stats_fold(out, &np->stats);
	pthread_mutex_unlock(&net_lock);
}

unsigned net_clients(void)
{
	return atomic_load_explicit(&net_nclients, memory_order_relaxed);
}

unsigned net_conns_allocated(void)
{
	return atomic_load_explicit(&net_nallocated, memory_order_acquire);
}

uint16_t net_port(struct px *px)
{
	uint16_t port = 0;
	pthread_mutex_lock(&net_lock);
	for (struct net_px *np = net_all; np != NULL; np = np->all_next)
		if (np->px == px)
			port = np->port;
	pthread_mutex_unlock(&net_lock);
	return port;
}
