"""Benchmarks behind `calendar-gateway bench`: they print figures, they are never timed tests.

One module per benchmark (`sync`, `api`, and `vault.bench` for the vault), `runner` runs them
all into one table (`report`). The moving parts are real and separate, as in production:
the Google emulator and each gateway (`calendar-gateway serve`) run as subprocesses over
loopback HTTP (`procs`), and HTTP load comes from its own process (`load`, runnable as
`python -m gateway.bench.load`). Throwaway databases and key rings live under a temporary
folder (`setup`); the configured database is never touched.
"""
