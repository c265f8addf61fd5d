"""The conversation rules, on a line that decoded: a fast yes/no and a slow account of what is wrong.

:func:`passes` runs on every decoded line and also yields the token estimate, the shape (how many
messages, whether a system message leads) and the duplicate fingerprint; only the lines it turns
down go through :func:`check_conversation`, which names every broken rule and its field.
:func:`count_roles` turns the shapes counted over a file back into role and turn counts.
"""

from __future__ import annotations

from core.validation.duplicates import FP_MASK, FP_PRIME
from core.validation.schema import Message
from core.validation.tokens import END_OF_TEXT_TOKENS, TEMPLATE_TOKENS_PER_MESSAGE


def passes(messages: list[Message], max_tokens: int) -> tuple[int, int, int] | None:
    """The check every decoded line goes through: ``(estimated tokens, shape, fingerprint)`` if
    the conversation breaks no rule, else None (then :func:`check_conversation` says what is wrong).

    A conversation that breaks no rule is an optional system message, then user and assistant
    messages alternating and ending with the assistant's; so its role counts follow from its
    length and whether it starts with a system message, and the loop only checks each role
    against the one before. ``shape`` is ``2 * len(messages) + has_system``
    (:func:`count_roles` turns it back into counts). The fingerprint is
    :func:`~core.validation.duplicates.content_fingerprint`, from the lengths measured for the
    estimate.
    """
    size = fingerprint = 0  # size: sum of utf8_bytes rounded up to even, i.e. 2 * ceil(bytes / 2)
    prev = ""
    for message in messages:
        content = message.content
        if not content or content.isspace():
            return None
        n = len(content) if content.isascii() else len(content.encode())
        size += n + (n & 1)
        fingerprint = fingerprint * FP_PRIME ^ n
        role = message.role
        if role == prev or (role == "system" and prev):  # repeated role, or system not first
            return None
        prev = role
    count = len(messages)
    tokens = (size >> 1) + TEMPLATE_TOKENS_PER_MESSAGE * count + END_OF_TEXT_TOKENS
    has_system = messages[0].role == "system" if count else False
    if prev != "assistant" or count - has_system < 2 or tokens > max_tokens:
        return None
    return tokens, 2 * count + has_system, fingerprint & FP_MASK


def count_roles(shapes: list[int]) -> tuple[dict[str, int], dict[int, int]]:
    """Role counts and examples per number of user turns, from the examples counted by shape
    (see :func:`passes`)."""
    n_system = n_user = n_assistant = 0
    turns: dict[int, int] = {}
    for shape, examples in enumerate(shapes):
        if examples:
            has_system = shape & 1
            user = ((shape >> 1) - has_system) // 2
            n_system += has_system * examples
            n_user += user * examples
            n_assistant += ((shape >> 1) - has_system - user) * examples
            turns[user] = turns.get(user, 0) + examples
    return {"system": n_system, "user": n_user, "assistant": n_assistant}, dict(sorted(turns.items()))


def check_conversation(
    messages: list[Message], max_tokens: int
) -> tuple[list[tuple[str, str]] | None, int, int, int, int]:
    """Conversation rules on a type-checked line.

    Returns (problems or None, estimated tokens as in :func:`estimate_tokens`, then the numbers of
    system, user and assistant messages). Run only on lines that :func:`passes` rejected.
    """
    if not messages:
        problem = ("messages", "'messages' is empty; need at least one user and one assistant message")
        return [problem], 0, 0, 0, 0
    problems: list[tuple[str, str]] | None = None
    size = 0  # sum of ceil(utf8_bytes / 2) over the contents
    n_system = n_user = n_assistant = 0
    prev = ""
    for i, message in enumerate(messages):
        role = message.role
        content = message.content
        size += ((len(content) if content.isascii() else len(content.encode())) + 1) >> 1
        if role == "system":
            n_system += 1
            if i:
                problems = problems or []
                problems.append(
                    (f"messages[{i}].role", "a system message is allowed only as the first message")
                )
        else:
            if role == prev:
                problems = problems or []
                problems.append(
                    (
                        f"messages[{i}].role",
                        f"two '{role}' messages in a row (messages[{i - 1}] and messages[{i}]); "
                        "user and assistant must alternate",
                    )
                )
            if role == "user":
                n_user += 1
            else:
                n_assistant += 1
        if not content or content.isspace():
            problems = problems or []
            what = "empty" if not content else "whitespace only"
            problems.append((f"messages[{i}].content", f"{role} message content is {what}"))
        prev = role
    tokens = size + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + END_OF_TEXT_TOKENS
    if not (n_user and n_assistant):
        missing = " and ".join(r for r, n in (("user", n_user), ("assistant", n_assistant)) if not n)
        problems = problems or []
        problems.append(
            ("messages", f"no {missing} message; need at least one user and one assistant message")
        )
    elif prev != "assistant":
        problems = problems or []
        problems.append(
            ("messages", f"conversation must end with an assistant message; the last is '{prev}'")
        )
    if tokens > max_tokens:
        problems = problems or []
        problems.append(
            (
                "messages",
                f"conversation is about {tokens} tokens (conservative estimate); limit is {max_tokens}",
            )
        )
    return problems, tokens, n_system, n_user, n_assistant
