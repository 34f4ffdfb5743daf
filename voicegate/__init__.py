"""voicegate: a real-time voice AI gateway with a native shared-memory core."""

import os as _os

__version__ = "0.1.0"

# onnxruntime's Linux builds (1.2x and later) carry Microsoft's 1DS telemetry: at import
# they create a session file in $TMPDIR, a device id under ~/.cache and an uploader. Only
# this variable, set before onnxruntime initializes, turns all of it off; every process
# of the node imports voicegate first and spawned ones inherit the environment.
# disable_telemetry_events() (voicegate.models.runtime) comes too late for the first event.
_os.environ["ORT_DISABLE_TELEMETRY"] = "1"
