/* vmalloc.h: the memory of one host VM (vmalloc.c).
 *
 * A VM makes thousands of small blocks (strings, tables, closures, the
 * prototypes of the library it loads) and touches them from one thread
 * only. malloc gives each an 8-byte header, rounds it to 16 and, in a
 * process with many thread actors, grows a shared arena a page at a time
 * under its lock. Lua tells the allocator the size of every block it
 * frees or resizes, so small blocks need no header at all: they are cut
 * from chunks owned by the VM, one free list per 16-byte size class, and
 * the chunks go back to malloc when the VM closes. Blocks larger than
 * PL_VM_SMALL_MAX are plain malloc blocks. Not thread-safe: one VM's
 * allocator is used by that VM's thread only. */
#ifndef PULSAR_VMALLOC_H
#define PULSAR_VMALLOC_H

#include <stddef.h>

#define PL_VM_SMALL_MAX 256
#define PL_VM_CLASSES (PL_VM_SMALL_MAX / 16)

typedef struct pl_vmalloc {
    void *free[PL_VM_CLASSES]; /* a list per class: 16, 32, ... 256 bytes */
    char *next, *end;          /* what the newest chunk has not handed out */
    struct pl_vm_chunk *chunks; /* every chunk, newest first */
} pl_vmalloc;

void pl_vmalloc_init(pl_vmalloc *a);

/* A lua_Alloc without the counting: ptr of osize bytes (ptr NULL: a new
 * block) becomes nsize bytes (0: freed, NULL returned). NULL if memory
 * runs out; never when a block shrinks. */
void *pl_vmalloc_realloc(pl_vmalloc *a, void *ptr, size_t osize, size_t nsize);

/* Gives every chunk back; the VM must be closed (its blocks all freed). */
void pl_vmalloc_destroy(pl_vmalloc *a);

#endif
