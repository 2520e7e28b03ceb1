"""LangChain / LangGraph adapter: callback handlers that stream a LangChain run to the
user through agentcast. Needs langchain-core (`pip install 'agentcast[langchain]'`).

    handler = AgentcastCallbackHandler(client.emitter("u1", thread_id="t1"))
    graph.invoke(inputs, config={"callbacks": [handler]})

The mapping is described in `agentcast._langchain_map` (one handler per run)."""

from __future__ import annotations

try:
    from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "agentcast.langchain needs langchain-core: pip install 'agentcast[langchain]'"
    ) from e

from ._langchain_map import AsyncCallbackMethods, CallbackMethods


class AgentcastCallbackHandler(CallbackMethods, BaseCallbackHandler):
    """A blocking LangChain callback handler publishing through an `Emitter`. It runs
    inline (`run_inline`), so its events keep the order LangChain calls them in."""

    run_inline = True
    raise_error = False


class AsyncAgentcastCallbackHandler(AsyncCallbackMethods, AsyncCallbackHandler):
    """The asyncio handler, publishing through an `AsyncEmitter`."""

    run_inline = True
    raise_error = False


__all__ = ["AgentcastCallbackHandler", "AsyncAgentcastCallbackHandler"]
