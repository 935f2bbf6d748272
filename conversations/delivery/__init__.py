"""Outbound delivery: the engine that sends queued rows to Meta, the Redis
rate limiters it shares with every worker, and the doorbells through which
the rest of the helpdesk asks Celery for work after commit."""
