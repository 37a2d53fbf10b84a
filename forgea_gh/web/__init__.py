"""HTTP: the webhook receiver and the read-only status endpoints."""
