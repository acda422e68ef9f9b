"""The domain: the call flow, the ticket lifecycle, the priority levels, the phone-number
rules, which waiting caller an engineer takes first, and the clock.

Plain Python: nothing here imports Flask, Twilio or SQLAlchemy, so every rule can be tested
on its own and used by the call service and the support desk alike.
"""
