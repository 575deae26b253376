"""Drop-in wiring of one `OsviClient` into web frameworks.

Each submodule imports its framework, so import the one you use; this package itself imports
nothing:

- `osvi_async.integrations.fastapi`: a lifespan that owns the client and a `Depends` that hands
  it to routes, for FastAPI and Starlette (`pip install 'osvi-async[fastapi]'`);
- `osvi_async.integrations.aiohttp`: a `cleanup_ctx` and an app key, for aiohttp.web (no extra:
  aiohttp is already a dependency).

See docs/integrations.md.
"""
