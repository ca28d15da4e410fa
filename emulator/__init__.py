"""A local Google (OAuth 2.0 + Calendar v3) that is as strict as the real one on the wire.

This package deliberately shares no code with `gateway/`: it is an independent reading of
Google's behaviour, so a misunderstanding in the gateway's Google client is caught here instead
of being mirrored. Start it in-process with `create_emulator_app()` or alone with
`calendar-gateway emulator --port 8085`.
"""
