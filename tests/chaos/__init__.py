"""Chaos tests: faults, outages, cancellation and hostile servers, checked from the server's log."""
