"""voicegate.workers."""
