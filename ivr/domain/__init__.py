"""The domain: the call flow, the ticket lifecycle and the phone-number rules.

Plain Python: nothing here imports Flask, Twilio or SQLAlchemy, so every rule can be tested
on its own and used by the call service and the support desk alike.
"""
