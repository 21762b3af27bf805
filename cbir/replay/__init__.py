"""Rebuilding the indexes from the log: reindex (new index parameters, no re-embedding),
re-embed (a new model), rebuild from nothing, and the generation switch behind the alias."""
