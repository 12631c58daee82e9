"""One module per delivery channel behind one protocol (batch.channels.base.Channel)."""

from __future__ import annotations

from batch.channels.base import Channel
from batch.channels.email import EMAIL
from batch.channels.signature import SIGNATURE
from batch.channels.sms import SMS
from batch.jobmodel import Job, JobSpec

CHANNELS: dict[str, Channel] = {c.name: c for c in (EMAIL, SMS, SIGNATURE)}

__all__ = ["CHANNELS", "Channel", "channel_for"]


def channel_for(name_or_spec: str | JobSpec | Job) -> Channel:
    """The channel a job (its spec, or the channel's name) sends through."""
    if isinstance(name_or_spec, Job):
        name_or_spec = name_or_spec.spec
    name = name_or_spec if isinstance(name_or_spec, str) else name_or_spec.channel
    try:
        return CHANNELS[name]
    except KeyError:
        raise ValueError(f"unknown channel {name!r} (known: {', '.join(CHANNELS)})") from None
