"""What a line must decode to: the ultrachat shape as msgspec types, and the decoders for it.

A line is decoded and type-checked in one step (roles are a ``Literal``). The strict decoder is
the first choice; :func:`decode_relaxed` takes lines that have fields the strict one does not
know. Both give a :class:`Line` whose ``messages`` hold only ``role`` and ``content``.
"""

from __future__ import annotations

import codecs
from typing import Literal

import msgspec

ROLES: tuple[str, ...] = ("system", "user", "assistant")


# Two decoders. The strict one knows every field of the ultrachat shape and forbids others, so
# when it succeeds every string in the line has been decoded, which proves the whole line is valid
# UTF-8. A line with extra fields falls back to the relaxed one, which skips unknown fields without
# looking at them, so its UTF-8 is checked separately. gc=False: these hold only strings and lists.
class Message(msgspec.Struct, gc=False):
    role: Literal["system", "user", "assistant"]
    content: str


class Line(msgspec.Struct, gc=False):
    messages: list[Message]


class _StrictMessage(Message, forbid_unknown_fields=True):
    pass


class _StrictLine(Line, forbid_unknown_fields=True):
    messages: list[_StrictMessage]  # type: ignore[assignment]
    prompt: str | None = None
    prompt_id: str | None = None


STRICT = msgspec.json.Decoder(_StrictLine)
RELAXED = msgspec.json.Decoder(Line)
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def decode_relaxed(view: memoryview) -> Line:
    """Decode ignoring unknown fields, after checking the whole line is valid UTF-8."""
    codecs.utf_8_decode(view, "strict", True)
    return RELAXED.decode(view)
