"""gearman."""
