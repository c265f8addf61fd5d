"""`python -m devhost.invoke_flow <flow dir> <question>`: ask the flow as a deployed flow is asked.

promptflow-core's `Flow` (its FlowInvoker: what serves a flow deployed to an Azure ML online
endpoint) resolves the flow's connections through `PF_CONNECTION_PROVIDER`, here the workspace
(`azureml://subscriptions/.../workspaces/<ws>`), so the custom connection the run wrote is read
from the workspace exactly as on Azure. Prints the flow's outputs as JSON.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m devhost.invoke_flow <flow dir> <question>", file=sys.stderr)
        return 2
    from promptflow.core import Flow

    outputs = Flow.load(source=argv[0])(input_data=argv[1])
    print(json.dumps(dict(outputs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
