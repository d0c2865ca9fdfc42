"""The project's exception types, one home for all of them.

The inference core raises these; the API layer maps each class to an HTTP status in one place
(`hydrodiag.api.errors`). Messages are meant for users: they name the offending field or file and
never carry a stack trace or an internal path beyond the file the user asked for.
"""

from __future__ import annotations


class HydrodiagError(Exception):
    """Base class of every error hydrodiag raises on purpose."""


class InvalidInputError(HydrodiagError):
    """A request is malformed; `field` is the dotted path of the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnknownTopologyError(InvalidInputError):
    def __init__(self, topology_id: str, field: str = "topology_id") -> None:
        super().__init__(field, f"unknown topology '{topology_id}'")
        self.topology_id = topology_id


class TopologyError(HydrodiagError):
    """A topology definition is inconsistent (dangling edge, duplicate id, unknown type...)."""


class CheckpointError(HydrodiagError):
    """A checkpoint file is missing, truncated, corrupt, foreign or does not fit the model."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"checkpoint '{path}': {problem}")
        self.path = str(path)
        self.problem = problem


class ModelNotLoadedError(HydrodiagError):
    """No model is loaded (yet) to serve a request."""


class QueueFullError(HydrodiagError):
    """The batching queue is at max_queue_size; the caller should retry later."""

    def __init__(self, max_queue_size: int, retry_after_s: float = 1.0) -> None:
        super().__init__(f"inference queue is full ({max_queue_size} requests waiting); retry later")
        self.max_queue_size = max_queue_size
        self.retry_after_s = retry_after_s


class EngineClosedError(HydrodiagError):
    """The engine is shutting down and accepts no new requests."""


class DatasetError(HydrodiagError):
    """A training data set is missing or malformed."""


class DeviceUnavailableError(HydrodiagError):
    """The configured device (e.g. DEVICE=cuda) does not exist on this machine."""


class StorageUnavailableError(HydrodiagError):
    """The history database cannot be reached right now (reads only: writes are buffered)."""


class NotFoundError(HydrodiagError):
    """A resource named in a path (model version, equipment) does not exist."""


class ConflictError(HydrodiagError):
    """The request conflicts with the current state (e.g. registering a topology id that exists)."""


class ModelActivationError(HydrodiagError):
    """A model version could not be loaded or warmed up; the previously active model keeps serving."""

    def __init__(self, version: str, problem: str, serving: str | None) -> None:
        still = f"; still serving version '{serving}'" if serving else ""
        super().__init__(f"model version '{version}' cannot be activated: {problem}{still}")
        self.version = version
        self.problem = problem
        self.serving = serving


class PeerSyncError(HydrodiagError):
    """WORKERS > 1: a change was applied and stored, but some workers did not confirm applying it in time."""

    def __init__(self, what: str, lagging: list[int], timeout_s: float) -> None:
        workers = ", ".join(str(slot) for slot in lagging)
        super().__init__(f"{what} took effect on this worker, but worker(s) {workers} did not apply it within "
                         f"{timeout_s:g} s (PEER_SYNC_TIMEOUT_S); repeat the request to be sure all have")
        self.lagging = lagging
