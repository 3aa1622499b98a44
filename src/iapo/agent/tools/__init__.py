"""The agent's tools: the registry (`registry.py`) and one module per tool family, imported here so they register.

from iapo.agent.tools import ToolCall, ToolContext, run_tool
"""

from iapo.agent.tools import (
    refocus,  # noqa: F401  (registers the ReFocus edits and the `table` / `chart` toolsets)
    zoom,  # noqa: F401  (registers zoom_in and the `zoom` toolset)
)
from iapo.agent.tools.registry import (
    TOOLS,
    TOOLSETS,
    Tool,
    ToolCall,
    ToolContext,
    ToolError,
    ToolResult,
    Toolset,
    format_tool_call,
    get_toolset,
    register_tool,
    register_toolset,
    run_tool,
    tool_failure_kinds,
    toolset_tools,
)

__all__ = [
    "TOOLS",
    "TOOLSETS",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "Toolset",
    "format_tool_call",
    "get_toolset",
    "register_tool",
    "register_toolset",
    "run_tool",
    "tool_failure_kinds",
    "toolset_tools",
]
