"""The support desk: its service, JSON API, dashboard and commands."""
