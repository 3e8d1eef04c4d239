"""Helpers that know nothing of spoolvault's objects: files, threads, batches, text."""
