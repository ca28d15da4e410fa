"""Connections: users connecting, keeping alive and disconnecting their Google Calendar."""
