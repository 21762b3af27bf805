"""The FastAPI query service and web page."""
