"""OpenAI Agents SDK adapter: `RunHooks` that stream a `Runner.run` to the user through
agentcast. Needs the SDK (`pip install 'agentcast[openai-agents]'`).

    hooks = AgentcastRunHooks(client.emitter("u1", thread_id="t1"))   # an AsyncClient's
    async with hooks.guard():
        result = await Runner.run(agent, "question", hooks=hooks)

The mapping is described in `agentcast._openai_agents_map` (one hooks object per run)."""

from __future__ import annotations

from typing import Any

try:
    from agents import RunHooks
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "agentcast.openai_agents needs the OpenAI Agents SDK: pip install 'agentcast[openai-agents]'"
    ) from e

from ._openai_agents_map import RunHooksMethods


class AgentcastRunHooks(RunHooksMethods, RunHooks[Any]):
    """`RunHooks` publishing through an `AsyncEmitter`; see the module docstring."""


__all__ = ["AgentcastRunHooks"]
