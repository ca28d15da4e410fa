"""Booking: creating, changing and cancelling the events the gateway itself makes."""
