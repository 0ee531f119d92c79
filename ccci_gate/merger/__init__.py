"""merger."""
