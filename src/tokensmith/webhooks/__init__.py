"""Organization webhooks: admin-configured URLs that receive signed JSON events.

Events are written to an outbox (``webhook_deliveries``) in the same transaction as the change
that caused them; ``tokensmith.webhooks.worker`` delivers them.
"""
