"""The FastAPI query service and web page (the query API issue)."""
