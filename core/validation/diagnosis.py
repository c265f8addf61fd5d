"""Why a line did not decode: the line read again with the standard library, and every problem
named with its field (``messages[2].role``) and what was expected.

Only lines the typed decoders reject come here, so this path may be slow.
"""

from __future__ import annotations

import json
import re
from typing import NoReturn

from core.validation.schema import ROLES

_ALLOWED_ROLES = ", ".join(repr(r) for r in ROLES)
_MSGSPEC_PATH = re.compile(r" - at `\$\.?(.*)`$")


class _NonStandardConstant(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _reject_constant(name: str) -> NoReturn:
    raise _NonStandardConstant(name)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def diagnose(line: bytes, exc: BaseException, *, unterminated: bool) -> list[tuple[str, str]]:
    """Re-read one rejected line with the standard library and name every problem found."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return [("", f"invalid UTF-8 at byte {err.start + 1} of the line ({err.reason})")]
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except _NonStandardConstant as err:
        column = text.find(err.name) + 1
        at = f" at column {column}" if column else ""
        return [("", f"invalid JSON: {err.name} is not valid JSON (use null or a number){at}")]
    except json.JSONDecodeError as err:
        message = f"invalid JSON: {err.msg.removesuffix(' at')} at column {err.colno}"
        if err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string"):
            message += "; the line ends too early (truncated?)"
            if unterminated:
                message += " — it is the last line and has no newline, so the upload may be cut off"
        return [("", message)]
    except RecursionError:
        return [("", "invalid JSON: nested too deeply")]

    problems = _structure_problems(obj)
    if problems:
        return problems
    where = _find_surrogate(obj, "")
    if where is not None:
        return [
            (
                where,
                "string contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); not valid Unicode",
            )
        ]
    # json accepted what msgspec rejected for a reason not covered above: report msgspec's words.
    detail = str(exc)
    match = _MSGSPEC_PATH.search(detail)
    field = match.group(1) if match else ""
    if match:
        detail = detail[: match.start()]
    if isinstance(exc, RecursionError):
        detail = "nested too deeply"
    return [(field, f"invalid line: {detail}")]


def _structure_problems(obj: object) -> list[tuple[str, str]]:
    if not isinstance(obj, dict):
        return [("", f"line must be a JSON object, got {_json_type(obj)}")]
    if "messages" not in obj:
        return [("messages", "missing required field 'messages'")]
    messages = obj["messages"]
    if not isinstance(messages, list):
        return [("messages", f"'messages' must be a list of messages, got {_json_type(messages)}")]
    if not messages:
        return [("messages", "'messages' is empty; need at least one user and one assistant message")]
    problems: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.append(
                (at, f"message must be an object with 'role' and 'content', got {_json_type(message)}")
            )
            continue
        if "role" not in message:
            problems.append((f"{at}.role", "missing required field 'role'"))
        else:
            role = message["role"]
            if not isinstance(role, str):
                problems.append((f"{at}.role", f"'role' must be a string, got {_json_type(role)}"))
            elif role not in ROLES:
                problems.append((f"{at}.role", f"role must be one of {_ALLOWED_ROLES}; got {role!r}"))
        if "content" not in message:
            problems.append((f"{at}.content", "missing required field 'content'"))
        else:
            content = message["content"]
            if not isinstance(content, str):
                problems.append((f"{at}.content", f"'content' must be a string, got {_json_type(content)}"))
            elif not content or content.isspace():
                what = "empty" if not content else "whitespace only"
                role = message.get("role")
                who = f"{role} message" if isinstance(role, str) and role in ROLES else "message"
                problems.append((f"{at}.content", f"{who} content is {what}"))
    return problems


def _find_surrogate(value: object, path: str) -> str | None:
    """Path of the first string (or key) holding a lone surrogate, or None."""
    stack: list[tuple[object, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                child_path = f"{where}.{key}" if where else str(key)
                if _find_surrogate(key, "") is not None:
                    return where
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None
