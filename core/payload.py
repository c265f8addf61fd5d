"""The request the seed's Prompt flow tool sends to the endpoint; smoke tests use it verbatim."""

from __future__ import annotations

from typing import Any

TEMPERATURE = 0.7
MAX_NEW_TOKENS = 128


def promptflow_payload(input_data: str) -> dict[str, Any]:
    """`integrate_with_promptflow(input_data, connection)`'s body, as in the seed flow."""
    return {
        "input_data": {
            "input_string": [{"role": "user", "content": input_data}],
            "parameters": {"temperature": TEMPERATURE, "max_new_tokens": MAX_NEW_TOKENS},
        }
    }
