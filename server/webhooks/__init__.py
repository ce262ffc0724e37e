"""Signed webhooks from the event log: storage, delivery worker and address checks."""
