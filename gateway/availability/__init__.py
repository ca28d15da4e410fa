"""Availability: busy intervals, working hours and slot finding. Pure domain code, no I/O."""
