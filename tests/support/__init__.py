"""What tests in several areas share: the running stack (emulator + gateway over real HTTP),
databases and services, CLI and MCP clients, gateway processes, and builders of calendar data.

Test modules import from here and from their own area's helper modules, never from another
test module or a conftest; nothing here holds state between tests (fixtures own it).
"""
