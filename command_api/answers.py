"""Run one command for a request and shape its answer: the part every write route shares.

Framework-free, so the routes and the vote fast lane (``command_api.fast_lane``) answer alike:
the rate limit is counted, the command runs once per idempotency key, and a replay is refunded.
Errors are raised; ``command_api.problems`` turns them into answers.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from command_api.planning import Command
from command_api.services import CommandServices
from command_api.work import WorkItem
from event_store.port import Origin
from kernel import tracing


class Answer(NamedTuple):
    """A command's successful answer: status, JSON body and the headers beyond content type."""

    status: int
    body: bytes
    headers: dict[str, str]


async def answer_command(
    services: CommandServices,
    command: Command,
    user_id: str,
    action: str,
    key: str | None,
    fingerprint: bytes,
    correlation_id: str | None,
    location: str | None = None,
) -> Answer:
    """Check the user's ``action`` limit, run ``command`` (once per idempotency ``key``, whose
    request is ``fingerprint``), and answer with its outcome."""
    limiter = services.rate_limiter
    quota = await limiter.check(user_id, action)

    def work(traceparent: str | None = None) -> WorkItem:
        origin = Origin(correlation_id=correlation_id, traceparent=traceparent)
        return WorkItem(
            command=command,
            user_id=user_id,
            idempotency_key=key,
            request_hash=fingerprint,
            origin=origin,
        )

    tracer = tracing.tracer()
    if tracer is None:
        outcome = await services.submit(work())
    else:
        with tracer.start_as_current_span(
            f"append {type(command).__name__}",
            attributes={"tally.user_id": user_id},
            set_status_on_exception=False,  # a domain error is an answer, not a failure
        ) as span:
            # The append's context goes into the events' metadata for the relay to continue.
            outcome = await services.submit(work(tracing.current_traceparent()))
            if isinstance(outcome, Exception):
                span.set_attribute("tally.outcome", type(outcome).__name__)
    if isinstance(outcome, Exception):
        raise outcome
    if outcome.replayed:
        await limiter.refund(user_id, action)  # a replay does nothing: it is not counted
        if quota is not None:
            quota = msgspec.structs.replace(quota, remaining=min(quota.limit, quota.remaining + 1))
    headers = quota.headers() if quota is not None else {}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    if location is not None and outcome.status == 201:
        headers["Location"] = location
    return Answer(outcome.status, outcome.body, headers)
