"""voicegate.server."""
