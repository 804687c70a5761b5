"""The message delivery state machine and message addressing helpers. Pure: no I/O.

    queued --lease--> leased --ack--> delivered
      ^                 |  \
      |   nack / lease  |   nack(no retry) or attempts used up
      +----expired------+    \
      |                       v
    (retry by operator) <--  failed
    queued --cancel--> cancelled
"""

from __future__ import annotations

import secrets
import string
from enum import StrEnum

from agent_shim.text import message_header, prepare_body
from agentvisor.errors import Conflict


class MessageState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Event(StrEnum):
    LEASE = "lease"
    ACK = "ack"
    NACK_RETRY = "nack_retry"
    EXPIRE = "expire"
    GIVE_UP = "give_up"
    CANCEL = "cancel"
    RETRY = "retry"


_TRANSITIONS: dict[tuple[MessageState, Event], MessageState] = {
    (MessageState.QUEUED, Event.LEASE): MessageState.LEASED,
    (MessageState.LEASED, Event.LEASE): MessageState.LEASED,  # re-lease after expiry
    (MessageState.LEASED, Event.ACK): MessageState.DELIVERED,
    (MessageState.DELIVERED, Event.ACK): MessageState.DELIVERED,  # a repeated ack is harmless
    (MessageState.LEASED, Event.NACK_RETRY): MessageState.QUEUED,
    (MessageState.LEASED, Event.EXPIRE): MessageState.QUEUED,
    (MessageState.LEASED, Event.GIVE_UP): MessageState.FAILED,
    (MessageState.QUEUED, Event.GIVE_UP): MessageState.FAILED,
    (MessageState.QUEUED, Event.CANCEL): MessageState.CANCELLED,
    (MessageState.FAILED, Event.RETRY): MessageState.QUEUED,
    (MessageState.CANCELLED, Event.RETRY): MessageState.QUEUED,
}

# Messages that still have to reach their recipient.
PENDING_STATES = (MessageState.QUEUED.value, MessageState.LEASED.value)


def transition(state: str, event: Event) -> MessageState:
    """The state after `event`, or Conflict when the event makes no sense in `state`."""
    current = MessageState(state)
    try:
        return _TRANSITIONS[(current, event)]
    except KeyError:
        raise Conflict(f"a {current.value} message cannot take '{event.value}'") from None


_ALPHABET = string.digits + string.ascii_lowercase


def base36(number: int) -> str:
    if number < 0:
        raise ValueError("negative")
    digits = ""
    while True:
        number, rem = divmod(number, 36)
        digits = _ALPHABET[rem] + digits
        if not number:
            return digits


def new_marker(message_id: int) -> str:
    """A short string unique per message that the shim types with it (see docs/delivery.md)."""
    salt = "".join(secrets.choice(_ALPHABET) for _ in range(3))
    return f"av-{base36(message_id)}{salt}"


def delivered_text(marker: str, body: str, sender: str) -> str:
    """What the shim types into the pane (`agent_shim.text`, docs/delivery.md): the header
    `[marker] from SENDER: ` first (the marker tells a crash between typing and ack from a
    message that never arrived; the sender is the one the token said), then the body, in which
    no line can begin like a header."""
    return message_header(marker, sender) + prepare_body(body)
