/* sanitize: marks for AddressSanitizer around memory a free list keeps.
 *
 * A block on a free list of our own is poisoned (POISON) until it is handed
 * out again (UNPOISON), so a use after free of a recycled block is caught as
 * one of a freed block would be; LEAK_ROOT makes a region a root of the leak
 * checker.  Without AddressSanitizer they compile to nothing.
 */
#ifndef RINGKV_SANITIZE_H
#define RINGKV_SANITIZE_H

#if defined(__SANITIZE_ADDRESS__) /* gcc */
#define RINGKV_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) /* clang */
#define RINGKV_ASAN 1
#endif
#endif

#ifdef RINGKV_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#define POISON(p, n)    ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n)  ASAN_UNPOISON_MEMORY_REGION(p, n)
#define LEAK_ROOT(p, n) __lsan_register_root_region(p, n)
#else
#define POISON(p, n)    ((void)(p), (void)(n))
#define UNPOISON(p, n)  ((void)(p), (void)(n))
#define LEAK_ROOT(p, n) ((void)(p), (void)(n))
#endif

#endif
