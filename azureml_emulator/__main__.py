"""`python -m azureml_emulator`: the Azure ML emulator as a process, like Azurite.

    python -m azureml_emulator --state-dir .run/azureml-emulator [--port 0]
        [--execute-local RUN_DIR] [--datastore NAME=CONTAINER ...]

Once it listens it writes `<state-dir>/env.json`: `{"pid", "url", "arm_proxy", "env"}`, where `env`
holds the settings a client process sets to use it (`clients.client_env`: custom cloud, managed
identity, CA bundle, workspace). It serves until SIGTERM or SIGINT.

`--execute-local RUN_DIR` runs fine-tuning jobs and deployments for real on the offline stack
under RUN_DIR (`local_executor`); the trainer reads datasets with the datasets storage settings of
this process's environment (`DatasetsStorage`). Without it, jobs and deployments follow the default
scripts (a job completes on its third read). `--datastore` declares a workspace datastore over a
container of that account (`azureml://datastores/NAME/paths/...` resolves to CONTAINER/...).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path

from azureml_emulator.server import EmulatorServer
from azureml_emulator.world import World

ENV_FILE = "env.json"


def _datastores(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        name, sep, container = pair.partition("=")
        if not sep or not name or not container:
            raise SystemExit(f"--datastore expects NAME=CONTAINER, got {pair!r}")
        found[name] = container
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m azureml_emulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", required=True, help="certificate, CA bundle and env.json go here")
    parser.add_argument("--port", type=int, default=0, help="HTTPS port (0: any free port)")
    parser.add_argument("--execute-local", metavar="RUN_DIR", help="run jobs and deployments on localml")
    parser.add_argument("--datastore", action="append", default=[], metavar="NAME=CONTAINER")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / ENV_FILE).unlink(missing_ok=True)
    world = World(datastores=_datastores(args.datastore))
    if args.execute_local:
        from azureml_emulator.local_executor import LocalExecutor
        from core.settings import Settings

        world.executor = LocalExecutor(Settings(BACKEND="local", LOCAL_RUN_DIR=args.execute_local))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with EmulatorServer(world, port=args.port, state_dir=state_dir) as server:
        info = {"pid": os.getpid(), "url": server.url, "arm_proxy": server.arm_proxy, "env": server.env()}
        staged = state_dir / f".{ENV_FILE}.tmp"
        staged.write_text(json.dumps(info, indent=2))
        staged.replace(state_dir / ENV_FILE)  # appears whole: readers poll for it
        logging.getLogger("azureml_emulator").info("Azure ML emulator on %s", server.url)
        stop.wait()
    (state_dir / ENV_FILE).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
