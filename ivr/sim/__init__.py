"""Driving the app from outside: the call simulator (with its estimate of listening time),
the surge driver, and callers and engineers together in simulated time."""
