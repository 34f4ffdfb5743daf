"""voicegate: a real-time voice AI gateway with a native shared-memory core."""

__version__ = "0.1.0"
