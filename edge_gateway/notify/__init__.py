"""Alert delivery to people: LINE Messaging API, signed webhooks, SMTP e-mail, ntfy.

The gateway's processor decides alerts (thresholds, hysteresis, hold, QC); this package turns
them into incidents (one "raised" and one "cleared" message each), renders Thai and English
messages from templates a city can edit, and delivers them through a durable SQLite outbox
(``notify.sqlite``) with retries, idempotency keys, per-channel rate limits and failover.

Modules: :mod:`.settings` (the ``alerts.toml`` file), :mod:`.outbox` (the durable queue),
:mod:`.incidents` (raised/cleared pairing, escalation, digest, silence rules),
:mod:`.templates` (messages), :mod:`.channels` (the senders), :mod:`.dispatcher` (the loop),
:mod:`.cap` (OASIS CAP 1.2), :mod:`.central` (``cityedge alerts serve``), :mod:`.cli`.
Only :mod:`.channels` and :mod:`.dispatcher` need ``aiohttp`` (``pip install 'cityedge[alerts]'``).
"""
