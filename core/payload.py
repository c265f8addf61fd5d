"""The request the seed's Prompt flow tool sends to the endpoint; smoke tests use it verbatim."""

from __future__ import annotations

import json
from typing import Any

TEMPERATURE = 0.7
MAX_NEW_TOKENS = 128


def promptflow_payload(input_data: str) -> dict[str, Any]:
    """`integrate_with_promptflow(input_data, connection)`'s body, as in the seed flow."""
    return chat_payload([{"role": "user", "content": input_data}])


def chat_payload(messages: list[dict[str, str]]) -> dict[str, Any]:
    """The same body for a whole conversation (the evaluation gate asks with the turns before the
    reference answer): the tool's shape and parameters, more messages in `input_string`."""
    return {
        "input_data": {
            "input_string": [{"role": m["role"], "content": m["content"]} for m in messages],
            "parameters": {"temperature": TEMPERATURE, "max_new_tokens": MAX_NEW_TOKENS},
        }
    }


def output_of(body: str) -> str:
    """The answer in a scoring response, read as the seed's tool does (`response.json()["output"]`);
    the raw body when it is not a JSON object with `output`."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and "output" in data:
        out = data["output"]
        return out if isinstance(out, str) else json.dumps(out)
    return body
