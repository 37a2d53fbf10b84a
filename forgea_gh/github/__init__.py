"""Talking to GitHub: the REST client, its credentials, and how to read its answers.

`client` (httpx + stamina), `auth` (a token, or a GitHub App's JWT and
installation tokens), `ratelimit` (sans-I/O reading of statuses and
rate-limit headers).
"""
