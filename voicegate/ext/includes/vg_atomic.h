/* Tiny atomic helpers over <stdatomic.h> for fields of a shared-memory segment.
 *
 * Ring fields are plain uint32_t/uint64_t at byte offsets of a mapping shared between
 * processes; these helpers view them as _Atomic objects of the same size and alignment
 * (lock-free on every platform we build for, so the cast is sound in practice) and give
 * each access an explicit memory order.
 */
#ifndef VG_ATOMIC_H
#define VG_ATOMIC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");

#define VG_A64(base, off) ((_Atomic uint64_t *)((char *)(base) + (off)))
#define VG_A32(base, off) ((_Atomic uint32_t *)((char *)(base) + (off)))

static inline uint64_t vg_load_acquire_u64(char *base, size_t off) {
    return atomic_load_explicit(VG_A64(base, off), memory_order_acquire);
}
static inline uint64_t vg_load_relaxed_u64(char *base, size_t off) {
    return atomic_load_explicit(VG_A64(base, off), memory_order_relaxed);
}
static inline void vg_store_release_u64(char *base, size_t off, uint64_t value) {
    atomic_store_explicit(VG_A64(base, off), value, memory_order_release);
}
static inline void vg_store_relaxed_u64(char *base, size_t off, uint64_t value) {
    atomic_store_explicit(VG_A64(base, off), value, memory_order_relaxed);
}
static inline uint32_t vg_load_acquire_u32(char *base, size_t off) {
    return atomic_load_explicit(VG_A32(base, off), memory_order_acquire);
}
static inline uint32_t vg_load_relaxed_u32(char *base, size_t off) {
    return atomic_load_explicit(VG_A32(base, off), memory_order_relaxed);
}
static inline void vg_store_release_u32(char *base, size_t off, uint32_t value) {
    atomic_store_explicit(VG_A32(base, off), value, memory_order_release);
}
static inline uint32_t vg_exchange_u32(char *base, size_t off, uint32_t value) {
    return atomic_exchange_explicit(VG_A32(base, off), value, memory_order_seq_cst);
}
static inline void vg_fence_seq_cst(void) {
    atomic_thread_fence(memory_order_seq_cst);
}

static inline int64_t vg_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Heartbeats need tick resolution only; the coarse clock is the same timebase read
 * without touching the TSC, a few ns instead of ~20 on every record. */
static inline int64_t vg_coarse_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One pause in a spin loop: frees the core's pipeline for a sibling hyper-thread and
 * cuts the memory-order mis-speculation penalty when the awaited store lands. */
static inline void vg_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

#endif
