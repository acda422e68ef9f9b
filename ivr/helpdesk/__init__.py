"""The help desk (Zendesk): phone tickets pushed there through an outbox of jobs, and what
agents do there brought back by a signed webhook. See base.py for the interface."""
