"""Calendar Gateway: the service between an AI sales agent and Google Calendar."""

__version__ = "0.1.0"
