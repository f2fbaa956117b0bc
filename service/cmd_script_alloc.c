/* cmd_script_alloc: the allocator of a proactor's Lua state.
 *
 * A script run makes and drops many small blocks — the KEYS and ARGV
 * strings, each redis.call's argument and reply strings and tables — and
 * glibc's malloc/free of them cost about a tenth of an EVALSHA's CPU time
 * (perf, docs/DECISIONS.md "Scripts").  Blocks of up to POOL_SMALL_MAX bytes
 * come instead from free lists, one per 16-byte size class, carved from one
 * region reserved at start (POOL_REGION bytes of address space, backed by
 * memory only as it is used): a block freed goes back on its class's list
 * for the next one of that size.  Lua says each block's size when it frees
 * or resizes it, so blocks carry no header; the region's bounds tell a
 * pooled block from a malloc'd one.  Bigger blocks, and small ones once the
 * region is used up, are malloc's.
 *
 * The state is used by one thread at a time (its proactor; the main thread
 * before the proactors start), so nothing here is shared.  Memory on the
 * free lists is kept for the state's life: at most POOL_REGION bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <lauxlib.h>

#include "cmd_script_int.h"

/* Under AddressSanitizer a block on a free list is poisoned, and the region
 * is a root of the leak checker (the state's malloc'd blocks are reached
 * through it): service/runtime/freelist.h, sanitize.h. */
#include "service/runtime/freelist.h"

#define POOL_CLASS     16  /* bytes: the size classes' step and alignment */
#define POOL_SMALL_MAX 256 /* blocks up to this size are pooled */
#define POOL_CLASSES   (POOL_SMALL_MAX / POOL_CLASS)
#define POOL_REGION    (32u << 20) /* address space reserved per state */

struct lua_pool {
	uint8_t *base, *end;      /* the region ([base, end): NULL when not reserved) */
	uint8_t *next;            /* where the next new block is carved */
	struct freelist free[POOL_CLASSES]; /* a list per class */
};

static size_t class_of(size_t n)
{
	return (n + POOL_CLASS - 1) / POOL_CLASS - 1;
}

static bool pooled(const struct lua_pool *p, const void *ptr)
{
	return (const uint8_t *)ptr >= p->base && (const uint8_t *)ptr < p->end;
}

/* A block of n bytes (n <= POOL_SMALL_MAX): from its class's list, carved
 * from the region, or malloc's once the region is used up. */
static void *small_get(struct lua_pool *p, size_t n)
{
	size_t c = class_of(n), size = (c + 1) * POOL_CLASS;
	void *b = freelist_pop(&p->free[c], size);
	if (b != NULL)
		return b;
	if ((size_t)(p->end - p->next) >= size) {
		b = p->next;
		p->next += size;
		UNPOISON(b, size);
		return b;
	}
	return malloc(n);
}

/* Frees block ptr of osize bytes, pooled or not. */
static void block_put(struct lua_pool *p, void *ptr, size_t osize)
{
	if (!pooled(p, ptr)) {
		free(ptr);
		return;
	}
	size_t c = class_of(osize);
	freelist_push(&p->free[c], ptr, (c + 1) * POOL_CLASS);
}

/* Lua's lua_Alloc: frees (nsize 0), allocates (ptr NULL) or resizes.  A
 * shrink never fails, as Lua requires. */
static void *pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct lua_pool *p = ud;
	if (nsize == 0) {
		if (ptr != NULL)
			block_put(p, ptr, osize);
		return NULL;
	}
	if (ptr == NULL)
		return nsize <= POOL_SMALL_MAX ? small_get(p, nsize) : malloc(nsize);
	if (!pooled(p, ptr) && (nsize > POOL_SMALL_MAX || osize > POOL_SMALL_MAX)) {
		void *n = realloc(ptr, nsize);
		return n != NULL || nsize > osize ? n : ptr;
	}
	if (pooled(p, ptr) && nsize <= POOL_SMALL_MAX && class_of(nsize) == class_of(osize))
		return ptr;
	void *n = nsize <= POOL_SMALL_MAX ? small_get(p, nsize) : malloc(nsize);
	if (n == NULL)
		return nsize <= osize ? ptr : NULL;
	memcpy(n, ptr, osize < nsize ? osize : nsize);
	block_put(p, ptr, osize);
	return n;
}

lua_State *script_state_new(void)
{
	struct lua_pool *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	void *region = mmap(NULL, POOL_REGION, PROT_READ | PROT_WRITE,
	                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (region != MAP_FAILED) { /* (else every block is malloc's) */
		p->base = p->next = region;
		p->end = p->base + POOL_REGION;
		POISON(region, POOL_REGION); /* (carved blocks are unpoisoned) */
		LEAK_ROOT(region, POOL_REGION);
	}
	lua_State *L = lua_newstate(pool_alloc, p);
	if (L == NULL) {
		if (p->base != NULL)
			munmap(p->base, POOL_REGION);
		free(p);
	}
	return L; /* (the pool lives as long as the state: never closed) */
}
