"""voicegate.workers.runtime: the worker processes of a node, their rings and status
blocks, and the supervisor that starts, watches and replaces them.

Modules:
    gateway_link     A gateway process's end of the node: the rings it writes and reads, and its
                     status
    janitor          The node's janitor: removes what a supervisor killed with -9 left in /dev/shm
    metrics          Reading a node's status blocks and ring counters from any process (the metrics
                     endpoint does, from a gateway): consistent-enough copies
    process          The body of a worker process, started by the supervisor with the spawn method
    process_control  Linux process facts the supervisor and workers rely on: identity that survives
                     pid reuse
    renamed_stages   Stage modules under the names they had before the layout of issue #14
    rings            The ring implementation a node runs on, chosen by configuration
                     (``rings.impl``)
    sdnotify         The systemd notification protocol (sd_notify), for a ``Type=notify`` service
    status           Per-process status blocks in shared memory: state, heartbeat, counters,
                     histograms
    supervisor       The supervisor: builds a node's shared memory, runs its workers, replaces
                     failed ones
    topology         Names and shapes of a node's rings and status blocks, derived from the
                     configuration
    worker           The worker runtime: drives one Stage between its input and output rings
"""
