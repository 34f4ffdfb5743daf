# POSIX semaphores, opened by name on segments whose semaphores posix_ipc created.
from posix.time cimport timespec


cdef extern from "<semaphore.h>" nogil:
    ctypedef struct sem_t:
        pass
    sem_t *SEM_FAILED
    sem_t *sem_open(const char *name, int oflag)
    int sem_close(sem_t *sem)
    int sem_post(sem_t *sem)
    int sem_trywait(sem_t *sem)
    # glibc >= 2.30: a timed wait on CLOCK_MONOTONIC, immune to wall-clock steps.
    int sem_clockwait(sem_t *sem, int clockid, const timespec *abstime)
    int sem_unlink(const char *name)
