"""Driving the app from outside: the call simulator and the surge driver."""
