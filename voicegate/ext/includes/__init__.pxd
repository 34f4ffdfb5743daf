# Makes voicegate/ext/includes a cimport package: C declarations for the ring's .pyx.
