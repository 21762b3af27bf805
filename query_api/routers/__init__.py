"""The API's routes, by area: search, images, operations."""
