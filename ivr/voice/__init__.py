"""The voice line: Twilio webhooks, the call service, its outage path and TwiML, and the
engineer line with the callbacks' legs."""
