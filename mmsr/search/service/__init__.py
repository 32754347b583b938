"""The search service and its client: any ``SearchBackends`` served over HTTP to rollout workers.

``server`` is the FastAPI app (``mmsr search serve``, ``cli``), ``api`` its request models and
the work behind each endpoint, ``timeouts`` the deadline on request heads; ``client`` is the
``http`` backend that rollout workers search through. Not here: the search contract
(``mmsr.search.base``), the cache, or the transport the client shares with the web backends
(``mmsr.search.transport``). Importing this package loads nothing: FastAPI and uvicorn come
with ``server`` only.
"""
