"""Tests of connecting, keeping alive and disconnecting Google Calendar integrations."""
