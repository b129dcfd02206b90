#ifndef HERALD_CMALLOC_SHIM_H
#define HERALD_CMALLOC_SHIM_H

#if __has_include(<malloc.h>)
#include <malloc.h>
#endif

/// glibc's malloc_trim(0), which Swift's Glibc module does not import (it is declared in
/// <malloc.h>): gives the memory the allocator holds free back to the system — the top of
/// every arena and, with madvise, the whole free pages inside them. 1 when some memory was
/// returned, 0 when none was (or on a C library without it).
static inline int herald_malloc_trim(void) {
#if defined(__GLIBC__)
        return malloc_trim(0);
#else
        return 0;
#endif
}

#endif
