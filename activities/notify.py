"""notify: POST one CloudEvents 1.0 completion event to NOTIFY_WEBHOOK_URL, HMAC-signed.

The URL (which may carry a token) and the signing secret are read here, from the app settings,
never from the payload, so neither reaches the durable history. A delivery that fails after its
retries is returned as data (and logged), never raised: a webhook must not change a run's outcome.
"""

from __future__ import annotations

import logging

from activities.wrapper import activity
from core.contracts import Notify
from core.models import Delivery
from core.notify import cloud_event, deliver, event_type_for
from core.settings import get_settings

log = logging.getLogger("activities.notify")


UNRESOLVED_REFERENCE = "@Microsoft.KeyVault("


@activity
def notify(inp: Notify) -> Delivery:
    settings = get_settings()
    event = cloud_event(event_type_for(inp.outcome), inp.subject, inp.data, time=inp.time)
    url, secret = settings.NOTIFY_WEBHOOK_URL, settings.NOTIFY_WEBHOOK_SECRET
    # A Key Vault reference the platform could not resolve reaches the app as its own text.
    unresolved = [
        name
        for name, value in (("NOTIFY_WEBHOOK_URL", url), ("NOTIFY_WEBHOOK_SECRET", secret))
        if value and value.startswith(UNRESOLVED_REFERENCE)
    ]
    if unresolved:
        delivery = Delivery(
            event_type=event["type"],
            event_id=event["id"],
            delivered=False,
            error=f"{' and '.join(unresolved)}: Key Vault reference unresolved (no secret or no access)",
        )
    else:
        delivery = deliver(
            url,
            event,
            secret,
            attempts=settings.NOTIFY_ATTEMPTS,
            first_backoff_s=settings.NOTIFY_FIRST_BACKOFF_S,
        )
    if not delivery.delivered and not delivery.skipped:
        log.warning(
            "event %s (%s) not delivered after %d attempt(s): %s",
            delivery.event_id,
            delivery.event_type,
            delivery.attempts,
            delivery.error,
        )
    return delivery
