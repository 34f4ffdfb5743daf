"""voicegate.models."""
