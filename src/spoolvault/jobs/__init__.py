"""Jobs: the job service (intake pipeline, lifecycle, housekeeping, PINs) and the
release service."""
