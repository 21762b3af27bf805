"""cbir-stream: reverse image search on an event stream.

This package holds what every stage shares: the settings object, the console command and
the log format. The stages themselves live in producers/, processors/, query_api/.
"""
