"""agentcast: publish AI agents' live progress to the people chatting with them, through
the agentcast gateway.

    from agentcast import Client
    with Client("http://127.0.0.1:8080", api_key="KEY") as client:
        with client.run("u1", agent="researcher") as run:
            run.thinking("Looking it up")
            run.complete("42")
"""

from ._base import CRITICAL_EVENTS, NO_RETRY, Event, PublishResult, RetryAttempt, RetryPolicy
from .agent_socket import AgentSocket
from .client import AsyncClient, Client
from .emitter import AsyncEmitter, Emitter
from .errors import (
    AgentcastError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ConnectionFailedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    UnavailableError,
)
from .runs import AsyncRun, AsyncToolCall, Run, ToolCall
from . import tokens

__version__ = "0.1.0"

__all__ = [
    "CRITICAL_EVENTS",
    "NO_RETRY",
    "AgentSocket",
    "AgentcastError",
    "AsyncClient",
    "AsyncEmitter",
    "AsyncRun",
    "AsyncToolCall",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "ConnectionFailedError",
    "Emitter",
    "Event",
    "NotFoundError",
    "PayloadTooLargeError",
    "PublishResult",
    "RateLimitedError",
    "RetryAttempt",
    "RetryPolicy",
    "Run",
    "ToolCall",
    "UnavailableError",
    "tokens",
]
