/* vmalloc.c: a VM's small blocks from chunks of its own, one free list per
 * size class, no headers (see vmalloc.h for why). */
#include "vmalloc.h"

#include <stdlib.h>
#include <string.h>

/* 16 KiB less malloc's own header, so that a chunk is an exact number of
 * pages of the arena. The data after the header stays 16-byte aligned. */
#define CHUNK_BYTES (16 * 1024 - 16)

typedef struct pl_vm_chunk {
    struct pl_vm_chunk *next;
    void *align; /* keeps data at 16 bytes from the chunk's start */
    char data[];
} pl_vm_chunk;

static int is_small(size_t size) { return size <= PL_VM_SMALL_MAX; }

static size_t class_of(size_t size) { return (size + 15) / 16 - 1; }

static size_t class_bytes(size_t cls) { return (cls + 1) * 16; }

void pl_vmalloc_init(pl_vmalloc *a) { memset(a, 0, sizeof *a); }

/* A new chunk to cut from; what the old one had left is not worth keeping
 * (less than the largest class). 0, or -1 if malloc refuses. */
static int new_chunk(pl_vmalloc *a) {
    pl_vm_chunk *c = malloc(CHUNK_BYTES);
    if (!c) return -1;
    c->next = a->chunks;
    a->chunks = c;
    a->next = c->data;
    a->end = (char *)c + CHUNK_BYTES;
    return 0;
}

/* A block of class cls: the class's list first, else the newest chunk. */
static void *take(pl_vmalloc *a, size_t cls) {
    void *block = a->free[cls];
    if (block) {
        a->free[cls] = *(void **)block;
        return block;
    }
    size_t n = class_bytes(cls);
    if ((size_t)(a->end - a->next) < n && new_chunk(a) != 0) return NULL;
    block = a->next;
    a->next += n;
    return block;
}

static void give_back(pl_vmalloc *a, void *ptr, size_t size) {
    if (!is_small(size)) {
        free(ptr);
        return;
    }
    size_t cls = class_of(size);
    *(void **)ptr = a->free[cls];
    a->free[cls] = ptr;
}

/* A small block (or none) grows or shrinks into a small one. Shrinking
 * keeps the block where it is: it is then freed under its new, smaller
 * size, into a class it more than fills, which is harmless. */
static void *resize_small(pl_vmalloc *a, void *ptr, size_t osize, size_t nsize) {
    if (ptr && nsize <= osize) return ptr;
    if (ptr && class_of(nsize) == class_of(osize)) return ptr;
    void *block = take(a, class_of(nsize));
    if (block && ptr) {
        memcpy(block, ptr, osize);
        give_back(a, ptr, osize);
    }
    return block;
}

/* A block (or none) becomes a large one, a malloc block. */
static void *resize_large(pl_vmalloc *a, void *ptr, size_t osize, size_t nsize) {
    if (!ptr || !is_small(osize)) {
        void *block = realloc(ptr, nsize);
        /* realloc may refuse even to shrink; the old block still serves */
        return block || nsize > osize ? block : ptr;
    }
    void *block = malloc(nsize);
    if (block) {
        memcpy(block, ptr, osize);
        give_back(a, ptr, osize);
    }
    return block;
}

void *pl_vmalloc_realloc(pl_vmalloc *a, void *ptr, size_t osize, size_t nsize) {
    if (!ptr) osize = 0; /* then osize is the kind of object, not a size */
    if (nsize == 0) {
        if (ptr) give_back(a, ptr, osize);
        return NULL;
    }
    if (!is_small(nsize)) return resize_large(a, ptr, osize, nsize);
    if (ptr && !is_small(osize)) {
        /* large to small: into the pool. Should that fail (a shrink may
         * not), the malloc block is kept; freed later as a small block it
         * joins a list and is not given back when the VM closes, a leak
         * of one block, only once memory has run out. */
        void *block = take(a, class_of(nsize));
        if (!block) return ptr;
        memcpy(block, ptr, nsize);
        free(ptr);
        return block;
    }
    return resize_small(a, ptr, osize, nsize);
}

void pl_vmalloc_destroy(pl_vmalloc *a) {
    while (a->chunks) {
        pl_vm_chunk *c = a->chunks;
        a->chunks = c->next;
        free(c);
    }
    pl_vmalloc_init(a);
}
