"""The support desk: its service, JSON API, dashboard and commands, the account
directory's import, engineers and the callbacks they place."""
