"""The gateway's Model Context Protocol face: the agent API's capabilities as MCP tools.

`server.build_mcp_server()` declares the tools (gateway.mcp.tools); `gateway.mcp.routes`
serves them at `/mcp` over streamable HTTP inside the gateway's aiohttp app; `stdio` bridges a
local agent's stdin/stdout to a gateway's `/mcp`.
"""
