/* freelist: a LIFO list of blocks of one size kept for reuse by the one
 * thread that owns it (no locking), linked through each block's first word.
 *
 * A pop prefetches the next block's link, since a pipeline takes many in a
 * row; under AddressSanitizer a listed block is poisoned but for its link,
 * which the leak checker must still see (sanitize.h).
 */
#ifndef RINGKV_FREELIST_H
#define RINGKV_FREELIST_H

#include <stddef.h>

#include "service/runtime/sanitize.h"

struct freelist {
	void *head;
	unsigned n;
};

/* A block of `size` bytes from l, or NULL when l is empty. */
static inline void *freelist_pop(struct freelist *l, size_t size)
{
	void *p = l->head;
	if (p == NULL)
		return NULL;
	UNPOISON(p, size);
	l->head = *(void **)p;
	l->n--;
	__builtin_prefetch(l->head, 1); /* the next pop's link */
	return p;
}

/* Puts block p of `size` bytes (at least a pointer) on l. */
static inline void freelist_push(struct freelist *l, void *p, size_t size)
{
	*(void **)p = l->head;
	POISON((char *)p + sizeof(void *), size - sizeof(void *));
	l->head = p;
	l->n++;
}

#endif
