# Declarations of vg_atomic.h: ordered access to fields of a shared mapping.
from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef extern from "vg_atomic.h" nogil:
    uint64_t vg_load_acquire_u64(char *base, size_t off)
    uint64_t vg_load_relaxed_u64(char *base, size_t off)
    void vg_store_release_u64(char *base, size_t off, uint64_t value)
    void vg_store_relaxed_u64(char *base, size_t off, uint64_t value)
    uint32_t vg_load_acquire_u32(char *base, size_t off)
    uint32_t vg_load_relaxed_u32(char *base, size_t off)
    void vg_store_release_u32(char *base, size_t off, uint32_t value)
    uint32_t vg_exchange_u32(char *base, size_t off, uint32_t value)
    void vg_fence_seq_cst()
    int64_t vg_now_ns()
    int64_t vg_coarse_now_ns()
    void vg_cpu_relax()
