"""voicegate.core."""
