"""Retrieval quality: pure metric functions and leave-one-out evaluation on labelled folders."""
