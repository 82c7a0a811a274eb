"""Errors Usher raises on purpose. Each docstring is the default message."""

from __future__ import annotations


class UsherError(Exception):
    """Something went wrong in Usher."""

    code = "usher_error"
    status = 400

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(UsherError):
    """A setting is invalid."""

    code = "invalid_setting"


class NotFound(UsherError):
    """No such object."""

    code = "not_found"
    status = 404


class UnknownAction(NotFound):
    """No action with that reference is registered."""

    code = "unknown_action"


class UnknownRule(NotFound):
    """No rule with that reference is loaded."""

    code = "unknown_rule"


class UnknownExecution(NotFound):
    """No execution with that id."""

    code = "unknown_execution"


class InvalidParameters(UsherError):
    """The parameters do not satisfy the action's schema."""

    code = "invalid_parameters"
    status = 422


class InvalidRequest(UsherError):
    """The request body is not what this endpoint takes."""

    code = "invalid_request"
    status = 400


class QueueFull(UsherError):
    """The action's waiting line is full; try again later or raise max_queue_length."""

    code = "queue_full"
    status = 429
    # Whole seconds until a place in line should free (the answer's Retry-After): from the
    # line's pace where the refusal is made (policies.eta.retry_after_s), else this.
    retry_after_s = 5

    def __init__(self, message: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class LineBusy(UsherError):
    """The action's line has no free slot and its when_busy is skip; try again later."""

    code = "line_busy"
    status = 409


class TooLarge(UsherError):
    """The request is larger than this installation accepts."""

    code = "payload_too_large"
    status = 413


class AlreadyFinished(UsherError):
    """The execution has already finished."""

    code = "already_finished"
    status = 409


class IdempotencyConflict(UsherError):
    """This Idempotency-Key was used for a different request; use a new key."""

    code = "idempotency_conflict"
    status = 409


class InvalidPack(UsherError):
    """A pack file is invalid."""

    code = "invalid_pack"
    status = 422


class Unauthorized(UsherError):
    """A valid bearer token is required (Authorization: Bearer <token>)."""

    code = "unauthorized"
    status = 401


class Forbidden(UsherError):
    """This token is read-only; use an admin token."""

    code = "forbidden"
    status = 403


class DatabaseUnavailable(UsherError):
    """The database is not answering; retry shortly."""

    code = "database_unavailable"
    status = 503


class Contention(UsherError):
    """A pack load moved this action between level groups at the same moment; retry."""

    code = "contention"
    status = 409
