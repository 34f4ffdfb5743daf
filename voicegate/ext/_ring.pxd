# Typed layout of the ring's extension types (voicegate/ext/_ring.pyx).
from libc.stdint cimport int64_t, uint32_t, uint64_t

from voicegate.ext.includes.semaphore cimport sem_t


cdef class Ring


cdef class Record:
    cdef readonly uint32_t kind
    cdef readonly uint32_t flags
    cdef readonly uint32_t session
    cdef readonly uint32_t turn
    cdef readonly uint32_t seq
    cdef readonly int64_t origin_ns
    cdef readonly int64_t sent_ns       # when the producer published it (CLOCK_MONOTONIC)
    cdef object _payload          # the payload of a record not read from a ring
    cdef Ring _ring               # the ring it was read from, or None
    cdef Py_ssize_t _offset       # payload offset in the data area
    cdef Py_ssize_t _length
    cdef uint64_t _generation     # the ring's release count when this record was read


cdef class Ring:
    cdef char *_ctrl              # control block of the mapped segment
    cdef char *_data              # record area
    cdef Py_buffer _ctrl_buf
    cdef Py_buffer _data_buf
    cdef bint _have_ctrl_buf
    cdef bint _have_data_buf
    cdef object _seg              # voicegate.ext.segment.Segment
    cdef object _ro               # read-only memoryview of the record area
    cdef sem_t *_sem_data
    cdef sem_t *_sem_space
    cdef str _name
    cdef str _role
    cdef str _peer                # the other side's role, "" for owner/observer
    cdef int _side
    cdef bint _owner
    cdef bint _closed
    cdef int _creator_pid
    # The kernel names, encoded at setup so the finaliser passes them to C as they are.
    cdef bytes _shm_name
    cdef bytes _data_sem_name
    cdef bytes _space_sem_name
    cdef bytes _bell_path
    cdef uint64_t _cap
    cdef uint64_t _mask
    cdef uint64_t _max_payload
    cdef int64_t _spin_ns
    cdef int64_t _slice_ns
    cdef size_t _beat_off
    cdef size_t _pid_off
    # producer
    cdef uint64_t _wpos           # end of staged records
    cdef uint64_t _pub            # published write_pos
    cdef uint64_t _cached_rpos
    cdef uint64_t _staged
    cdef uint64_t _written
    cdef uint64_t _dropped
    cdef uint64_t _wakeups
    cdef uint64_t _pparks
    # consumer
    cdef uint64_t _rpos           # end of records handed out
    cdef uint64_t _released       # published read_pos
    cdef uint64_t _cached_wpos
    cdef uint64_t _read
    cdef uint64_t _cparks
    cdef uint64_t _space_wakeups
    cdef uint64_t _generation
    cdef uint64_t _slice_timeouts
    cdef int _waiting             # threads inside a GIL-free wait on this handle
    cdef object _bell_reader
    cdef object _bell_writer

    cdef int _setup(self, object seg, str role, double spin_us, double park_slice_s) except -1
    cdef int _check(self, int side, str op) except -1
    cdef int _check_open(self) except -1
    cdef inline void _beat(self) noexcept
    cdef int _stage(self, long long kind, long long session, long long turn, long long seq,
                    long long origin_ns, object payload, long long flags,
                    bint count_drop) except -1
    cdef int _stage_bytes(self, long long kind, long long session, long long turn,
                          long long seq, long long origin_ns, const char *body,
                          Py_ssize_t body_len, long long flags, bint count_drop) except -1
    cdef inline int _stage_record(self, Record record, bint count_drop) except -1
    cdef int _publish(self) except -1
    cdef int _wake_consumer(self) except -1
    cdef int _drop(self) except -1
    cdef int _wait_space(self, uint64_t length, double timeout) except -1
    cdef inline bint _has_record(self) noexcept
    cdef object _next(self)
    cdef int _release(self) except -1
    cdef int _wait_readable(self, double timeout) except -1
    cdef int _wait_until(self, bint for_space, uint64_t target, double timeout) except -1
    cdef int _wake_all(self) except -1
    cdef int _map_data(self) except -1
    cdef void _unmap_data(self) noexcept
    cdef void _drop_handles(self) noexcept
