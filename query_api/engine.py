"""What the API does, apart from HTTP: one use case a module (search, duplicates, the
catalogue) over one shared context of adapters, caches and breakers (context.py)."""

from __future__ import annotations

from query_api.catalogue import Catalogue
from query_api.context import QueryContext
from query_api.duplicates import Duplicates
from query_api.search import Search


class QueryEngine:
    """The API's use cases, made over one context (the wiring makes it)."""

    def __init__(self, context: QueryContext) -> None:
        self.context = context
        self.search = Search(context)
        self.duplicates = Duplicates(context, self.search)
        self.catalogue = Catalogue(context, self.search)

    def close(self) -> None:
        self.search.close()
        self.context.close()
