"""FastAPI application factory.

The model loads in the background after start-up: /health answers at once (liveness) and /ready
turns 200 only when the model is loaded and warmed up, which is what an orchestrator or a load
balancer waits for. A failed load is logged, reported by /health (503) and /ready, and never
retried silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from hydrodiag import __version__
from hydrodiag.api.errors import REQUEST_ID_HEADER, install_error_handlers
from hydrodiag.api.middleware import RequestContextMiddleware
from hydrodiag.api.routes import router
from hydrodiag.errors import HydrodiagError
from hydrodiag.inference.engine import InferenceEngine
from hydrodiag.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Diagnoses hydraulic machines from a window of sensor readings with a temporal graph neural network: "
    "system and per-component health, the probabilities of 9 anomaly types, and the degradation trend of "
    "each machine."
)


async def _load_model(app: FastAPI, engine: InferenceEngine) -> None:
    try:
        await engine.start()
    except asyncio.CancelledError:
        raise
    except HydrodiagError as exc:
        app.state.load_error = str(exc)
        logger.error("model failed to load: %s", exc)
    except Exception as exc:  # anything else is a bug, but the process must still report it
        app.state.load_error = f"{type(exc).__name__} while loading the model (see the server log)"
        logger.exception("model failed to load")
    else:
        served = engine.model
        if served is not None:
            logger.info("ready: model %s version %s on %s", served.path, served.model_version, served.device)


def create_app(settings: Settings | None = None, engine: InferenceEngine | None = None) -> FastAPI:
    """The app serving `engine` (by default one built from `settings`, which the app then owns)."""
    settings = settings or get_settings()
    owns_engine = engine is None
    served_engine = engine or InferenceEngine(settings=settings, auto_start=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = None
        if not served_engine.is_loaded:
            loader = asyncio.create_task(_load_model(app, served_engine), name="hydrodiag-model-load")
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loader
            if owns_engine:
                await served_engine.close()

    app = FastAPI(title="hydrodiag", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.engine = served_engine
    app.state.settings = settings
    app.state.load_error = None
    install_error_handlers(app)
    if settings.cors_origins:
        # Credentials stay off: the API has no cookies or auth, and '*' with credentials is unsafe.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware)  # added last = outermost: it sees every response
    app.include_router(router)
    return app
