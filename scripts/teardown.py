"""Delete what this app created, after showing what it is and what it costs per hour.

The tutorial this app automates ends with "to avoid further charges, delete the endpoint you
created". A run leaves more than one endpoint behind over time; this script finds and removes,
in this order:

1. the managed online endpoints tagged ``created-by=phi3-finetune-pipeline`` (with their
   deployments: each one's instance type x count and list price per hour, and the total - see
   ``core/costs.py``). Nothing without that tag is ever deleted: an untagged endpoint named with
   ``--endpoint`` is shown as "not ours, left alone"; one not named is not shown at all;
2. the Prompt flow connection ``CONNECTION_NAME``, if it exists (only its name is shown);
3. the registered model versions tagged ``created-by=phi3-finetune-pipeline`` (Azure ML archives
   them; offline they are deleted from the MLflow registry), unless ``--keep-models``.

``--endpoint NAME ...`` (repeatable) narrows step 1 to those endpoints; the connection and the model
versions are still listed (``--keep-models`` keeps the models).

It lists first and asks ``Delete these? [y/N]`` on a terminal. Without a terminal on stdin
(CI, a pipe) it deletes only with ``--yes``, and otherwise stops with exit code 2. ``--json``
prints the inventory and results as one JSON document and never asks: without ``--yes`` it is a
dry run, with ``--yes`` it deletes. A failed deletion is reported and the rest still goes ahead.

Settings: the app's own (``core.settings.Settings``), read the way ``func start`` reads them:
the environment first, then the ``Values`` of ``local.settings.json`` for what the environment
does not set. When neither sets ``BACKEND`` and the dev host's run directory exists
(``LOCAL_RUN_DIR``, default ``.run``), the offline backend is used with the dev host's defaults,
so ``python scripts/teardown.py`` after ``make up`` cleans up the local stack. Set
``BACKEND=local`` or ``BACKEND=azureml`` to choose explicitly.

Usage::

    python scripts/teardown.py                    # list, then ask
    python scripts/teardown.py --json             # list only (dry run), machine-readable
    python scripts/teardown.py --yes              # delete without asking (CI)
    python scripts/teardown.py --endpoint phi3-ft-endpoint --keep-models

Exit codes: 0 done (deleted, declined, or nothing to delete); 1 something could not be listed or
deleted (each failure is named); 2 bad settings, or deletion refused because stdin is not a
terminal and ``--yes`` was not given.

Nothing printed contains a secret: endpoint keys and connection contents are never read here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python scripts/teardown.py` puts scripts/ first, not the root
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel, ConfigDict, Field, ValidationError  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from backends import registry  # noqa: E402
from backends.registry import Backends  # noqa: E402
from core import cli  # noqa: E402
from core.costs import CURRENCY, PRICES_AS_OF, REGION, format_cost, hourly_cost  # noqa: E402
from core.models import ModelRef, ProvisioningState  # noqa: E402
from core.naming import APP_TAG, CREATED_BY_TAG  # noqa: E402
from core.settings import Settings  # noqa: E402

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2  # also: settings unusable

LOCAL_SETTINGS = "local.settings.json"
DEFAULT_RUN_DIR = ".run"  # the dev host's default (python -m devhost --run-dir)
LOCAL_PRICE_KEY = "local"  # core.costs: the offline backend runs on this machine
_WORKSPACE_SETTINGS = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE")
_PIPED_WIDTH = 160  # columns of the readable report when stdout is not a terminal


class ConfigError(Exception):
    """The settings cannot be used; the message says what to set. Exit 2."""


# -- what there is -------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeploymentItem(_Frozen):
    name: str
    instance_type: str
    instance_count: int
    state: str
    priced_as: str  # the key looked up in core.costs: the instance type, or "local" offline
    cost_per_hour: float | None  # None: instance type not in the price table


class EndpointItem(_Frozen):
    name: str
    state: str
    deployments: list[DeploymentItem] = Field(default_factory=list)
    cost_per_hour: float | None  # known deployment costs summed; None if none could be priced
    error: str | None = None  # its deployments could not be listed


class ForeignEndpoint(_Frozen):
    """An endpoint named with --endpoint that this app did not create: listed, never deleted."""

    name: str
    reason: str


class ModelItem(_Frozen):
    name: str
    version: str
    run: str | None = None  # the instance-id tag: which run registered it


class Inventory(_Frozen):
    backend: Literal["azureml", "local"]
    where: str  # workspace / run dir, for people (no ids that matter, no secrets)
    pricing: str  # what the prices are (region, date, not a bill)
    endpoints: list[EndpointItem] = Field(default_factory=list)
    not_ours: list[ForeignEndpoint] = Field(default_factory=list)
    not_found: list[str] = Field(default_factory=list)  # named with --endpoint, not there
    others: int = 0  # untagged endpoints not named: only counted, never listed
    connection: str | None = None  # CONNECTION_NAME if it exists
    models: list[ModelItem] = Field(default_factory=list)
    models_kept: bool = False
    total_per_hour: float = 0.0  # priced deployments only
    unpriced: list[str] = Field(default_factory=list)  # what the total leaves out, and why
    problems: list[str] = Field(default_factory=list)  # what could not be listed

    @property
    def empty(self) -> bool:
        return not self.endpoints and self.connection is None and not self.models


class Result(_Frozen):
    kind: Literal["endpoint", "connection", "model"]
    name: str
    ok: bool
    error: str | None = None


def _error(exc: BaseException) -> str:
    """One line naming the exception: enough to act on, short enough for a table cell."""
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def inventory(
    backends: Backends,
    settings: Settings,
    endpoints: Sequence[str] | None = None,
    keep_models: bool = False,
) -> Inventory:
    """What this app created and what it costs per hour. Lists only; deletes nothing.

    A listing that fails is recorded in `problems` (and the rest is still listed), so a broken
    model registry does not hide a costly endpoint.
    """
    named = list(dict.fromkeys(endpoints)) if endpoints else None
    offline = settings.BACKEND == "local"
    problems: list[str] = []
    ours: list[EndpointItem] = []
    not_ours: list[ForeignEndpoint] = []
    unpriced: list[str] = []
    others = 0
    total = 0.0
    seen: set[str] = set()

    try:
        listed = backends.serving.list_endpoints()
    except Exception as exc:
        listed = []
        problems.append(f"endpoints could not be listed: {_error(exc)}")
    for info in sorted(listed, key=lambda e: e.name):
        if info.state is ProvisioningState.NOT_FOUND or info.name in seen:
            continue
        seen.add(info.name)
        is_named = named is None or info.name in named
        created_by = info.tags.get(CREATED_BY_TAG)
        if created_by != APP_TAG:
            if named is not None and is_named:
                why = f"tagged {CREATED_BY_TAG}={created_by}" if created_by else f"no {CREATED_BY_TAG} tag"
                not_ours.append(
                    ForeignEndpoint(
                        name=info.name, reason=f"{why} (this app tags {CREATED_BY_TAG}={APP_TAG})"
                    )
                )
            else:
                others += 1
            continue
        if not is_named:
            continue
        item = _endpoint_item(backends, info.name, info.state.value, offline)
        if item.error:
            problems.append(f"deployments of endpoint {info.name} could not be listed: {item.error}")
            unpriced.append(f"{info.name}: deployments could not be listed")
        for d in item.deployments:
            if d.cost_per_hour is None:
                unpriced.append(
                    f"{info.name}/{d.name}: {d.instance_type} × {d.instance_count} (no list price)"
                )
            else:
                total += d.cost_per_hour
        ours.append(item)
    missing = [n for n in named if n not in seen] if named is not None else []

    # Narrowed to some endpoints: the connection and the model versions may serve the others.
    connection = None
    try:
        if named is None and backends.connections.connection_exists(settings.CONNECTION_NAME):
            connection = settings.CONNECTION_NAME
    except Exception as exc:
        problems.append(f"connection {settings.CONNECTION_NAME} could not be looked up: {_error(exc)}")

    models: list[ModelItem] = []
    if not keep_models and named is None:
        try:
            for ref, tags in backends.training.list_models(APP_TAG):
                if tags.get(CREATED_BY_TAG) != APP_TAG:  # the backend filters; never trust it blindly
                    continue
                models.append(ModelItem(name=ref.name, version=ref.version, run=tags.get("instance-id")))
        except Exception as exc:
            problems.append(f"model versions could not be listed: {_error(exc)}")

    return Inventory(
        backend=settings.BACKEND,
        where=_where(settings),
        pricing=(
            f"{CURRENCY} per hour, pay-as-you-go Linux list prices, {REGION}, as of {PRICES_AS_OF} "
            "(core/costs.py): for planning, not a bill"
            + ("; the offline backend runs on this machine and costs nothing" if offline else "")
        ),
        endpoints=ours,
        not_ours=not_ours,
        not_found=missing,
        others=others,
        connection=connection,
        models=models,
        models_kept=keep_models,
        total_per_hour=round(total, 6),
        unpriced=unpriced,
        problems=problems,
    )


def _endpoint_item(backends: Backends, name: str, state: str, offline: bool) -> EndpointItem:
    try:
        found = backends.serving.list_deployments(name)
    except Exception as exc:
        return EndpointItem(name=name, state=state, cost_per_hour=None, error=_error(exc))
    deployments = []
    for d in sorted(found, key=lambda d: d.name):
        priced_as = LOCAL_PRICE_KEY if offline else d.instance_type
        deployments.append(
            DeploymentItem(
                name=d.name,
                instance_type=d.instance_type,
                instance_count=d.instance_count,
                state=d.state.value,
                priced_as=priced_as,
                cost_per_hour=hourly_cost(priced_as, d.instance_count),
            )
        )
    known = [d.cost_per_hour for d in deployments if d.cost_per_hour is not None]
    cost = round(sum(known), 6) if known or not deployments else None
    return EndpointItem(name=name, state=state, deployments=deployments, cost_per_hour=cost)


def _where(settings: Settings) -> str:
    if settings.BACKEND == "local":
        return f"offline, run dir {settings.LOCAL_RUN_DIR}"
    return f"workspace {settings.AZUREML_WORKSPACE} (resource group {settings.AZURE_RESOURCE_GROUP})"


# -- deleting ------------------------------------------------------------------------------------


def delete(backends: Backends, inventory: Inventory) -> list[Result]:
    """Delete everything in `inventory`: endpoints (the cost) first, then the connection, then the
    model versions. A failure is recorded and the rest still goes ahead."""
    results: list[Result] = []

    def attempt(
        kind: Literal["endpoint", "connection", "model"], name: str, action: Callable[[], None]
    ) -> None:
        try:
            action()
        except Exception as exc:
            results.append(Result(kind=kind, name=name, ok=False, error=_error(exc)))
        else:
            results.append(Result(kind=kind, name=name, ok=True))

    for endpoint in inventory.endpoints:
        attempt("endpoint", endpoint.name, lambda n=endpoint.name: backends.serving.delete_endpoint(n))
    if inventory.connection is not None:
        name = inventory.connection
        attempt("connection", name, lambda: backends.connections.delete_connection(name))
    for model in inventory.models:
        ref = ModelRef(name=model.name, version=model.version)
        attempt("model", f"{ref.name}:{ref.version}", lambda r=ref: backends.training.delete_model(r))
    return results


# -- settings and backends -----------------------------------------------------------------------


def load_settings(environ: MutableMapping[str, str] | None = None, root: Path = ROOT) -> tuple[Settings, str]:
    """The app's settings as `func start` would see them, and a note on where they came from.

    `environ` (default: os.environ) gets the `local.settings.json` values it lacks (as the
    Functions host does, so DefaultAzureCredential sees AZURE_CLIENT_ID too) and, for the offline
    backend, the dev host's defaults. Raises ConfigError with what to set.
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    sources = []
    path = root / LOCAL_SETTINGS
    values = _local_settings(path)
    added = [k for k, v in values.items() if v and not env.get(k)]
    for key in added:
        env[key] = values[key]
    sources.append("environment" + (f" + {LOCAL_SETTINGS}" if values else ""))
    if not env.get("BACKEND"):
        run_dir = _resolve(env.get("LOCAL_RUN_DIR") or DEFAULT_RUN_DIR, root)
        workspace = [k for k in _WORKSPACE_SETTINGS if env.get(k) and not env[k].startswith("<")]
        if run_dir.is_dir() and workspace:
            raise ConfigError(
                f"BACKEND is not set, and both an Azure ML workspace ({', '.join(workspace)}) and the "
                f"dev host's run dir {run_dir} exist: set BACKEND=azureml or BACKEND=local"
            )
        if run_dir.is_dir():
            env["BACKEND"] = "local"
            sources.append(f"no BACKEND set and the dev host's run dir {run_dir} exists: offline")
    if env.get("BACKEND") == "local":
        from devhost.config import OFFLINE_DEFAULTS

        for key, value in OFFLINE_DEFAULTS.items():
            if not env.get(key):
                env[key] = value
        env["LOCAL_RUN_DIR"] = str(_resolve(env.get("LOCAL_RUN_DIR") or DEFAULT_RUN_DIR, root))
    fields = {k: v for k, v in env.items() if k in Settings.model_fields and v}
    try:
        settings = Settings(**fields)
    except ValidationError as exc:
        found = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(
            f"the app settings are not usable ({found}). Set them in the environment or in {path}; "
            "for the offline stack start the dev host first (`make up`) or set BACKEND=local"
        ) from None
    if settings.BACKEND == "azureml":
        for key in _WORKSPACE_SETTINGS:
            value = getattr(settings, key) or ""
            if value.startswith("<") and value.endswith(">"):
                raise ConfigError(
                    f"{key} is still the sample placeholder {value!r}: set the real value in {path} "
                    "or the environment (or BACKEND=local for the offline stack)"
                )
    return settings, "; ".join(sources)


def _local_settings(path: Path) -> dict[str, str]:
    """The string `Values` of local.settings.json; {} if there is no such file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read as JSON ({exc}); fix it or move it away") from None
    values = document.get("Values") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise ConfigError(f'{path} has no "Values" object (see local.settings.sample.json)')
    return {str(k): v for k, v in values.items() if isinstance(v, str)}


def _resolve(path: str, root: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root / p).resolve()


def build_backends(settings: Settings) -> Backends:
    """The app's backends (backends.registry) for `settings`; teardown uses no datasets storage."""
    return registry.build(settings, storage="teardown")


# -- command line --------------------------------------------------------------------------------


def stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def ask(question: str) -> str:
    """The answer typed at the prompt ("" at end of input)."""
    try:
        return input(question)
    except EOFError:
        return ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teardown.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            f"List what this app created (endpoints and model versions tagged\n{CREATED_BY_TAG}={APP_TAG}, "
            "the Prompt flow connection) with the cost per hour,\nand delete it after asking."
        ),
        epilog=(
            "Nothing without the created-by tag is ever deleted.\n"
            "exit codes: 0 done / declined / nothing to delete; 1 something could not be listed or\n"
            "deleted; 2 bad settings, or stdin is not a terminal and --yes was not given."
        ),
    )
    parser.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    parser.add_argument(
        "--endpoint",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="only these endpoints (repeatable; the connection and model versions are then kept); "
        "an untagged one is shown as not ours and left alone",
    )
    parser.add_argument("--keep-models", action="store_true", help="keep the registered model versions")
    parser.add_argument(
        "--json", action="store_true", help="print the inventory and results as JSON; without --yes: dry run"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    backends: Backends | None = None,
    settings: Settings | None = None,
) -> int:
    """Run the CLI; returns the exit code. `backends`/`settings` default to the app's own."""
    args = build_parser().parse_args(argv)
    source = "given"
    try:
        if settings is None:
            settings, source = load_settings()
        if backends is None:
            backends = build_backends(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ImportError as exc:  # e.g. the offline stack without `scripts/setup.sh full`
        print(
            f"error: the backend cannot be loaded ({exc}); install its packages with `make setup` "
            "(the offline backend needs the full profile: scripts/setup.sh full)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    inv = inventory(backends, settings, endpoints=args.endpoint, keep_models=args.keep_models)

    if args.json:
        results = delete(backends, inv) if args.yes and not inv.empty else []
        code = _exit_code(inv, results)
        document: dict[str, Any] = {
            "ok": code == EXIT_OK,
            "exit_code": code,
            "dry_run": not args.yes,
            "settings": source,
            "inventory": inv.model_dump(mode="json"),
            "results": [r.model_dump(mode="json") for r in results],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return code

    console = _console()
    _render_inventory(console, inv, source)
    if inv.empty:
        console.print(
            "Nothing to delete: no endpoint, connection or model version created by this app was found."
        )
        return _exit_code(inv, [])
    if not args.yes:
        if not stdin_is_tty():
            print(
                "error: stdin is not a terminal, so nobody can confirm: pass --yes to delete what is "
                "listed above without asking (or --json to only list it). Nothing was deleted.",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        if ask("Delete these? [y/N] ").strip().lower() not in ("y", "yes"):
            console.print("Nothing deleted.")
            return _exit_code(inv, [])
    results = delete(backends, inv)
    _render_results(console, inv, results)
    return _exit_code(inv, results)


def _exit_code(inv: Inventory, results: list[Result]) -> int:
    return EXIT_FAILED if inv.problems or any(not r.ok for r in results) else EXIT_OK


# -- readable output -----------------------------------------------------------------------------


def _console() -> Console:
    console = Console(markup=False, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPED_WIDTH  # logs and pipes: one line per row
    return console


def _render_inventory(console: Console, inv: Inventory, source: str) -> None:
    console.print(Text.assemble(Text("Backend: ", style="bold"), f"{inv.backend}, {inv.where}"))
    console.print(Text.assemble(Text("Settings: ", style="bold"), source))
    if not inv.empty:
        table = Table(title=f"Created by this app ({CREATED_BY_TAG}={APP_TAG})", title_justify="left")
        table.add_column("Kind", no_wrap=True)
        table.add_column("Name", overflow="fold")
        table.add_column("Details", overflow="fold")
        table.add_column("Cost", justify="right", no_wrap=True)
        for ep in inv.endpoints:
            details = f"{ep.state}, {len(ep.deployments)} deployment(s)"
            if ep.error:
                details = f"{ep.state}, deployments could not be listed"
            cost = format_cost(ep.cost_per_hour)
            if ep.cost_per_hour is not None and any(d.cost_per_hour is None for d in ep.deployments):
                cost += " + unknown"
            table.add_row("endpoint", ep.name, details, cost)
            for d in ep.deployments:
                shape = f"{d.instance_type or '?'} × {d.instance_count}, {d.state}"
                if d.priced_as == LOCAL_PRICE_KEY and d.instance_type != LOCAL_PRICE_KEY:
                    shape += " (ignored offline: runs on this machine)"
                table.add_row("  deployment", f"{ep.name}/{d.name}", shape, format_cost(d.cost_per_hour))
        if inv.connection is not None:
            table.add_row("connection", inv.connection, "Prompt flow custom connection", "")
        for m in inv.models:
            table.add_row("model", f"{m.name}:{m.version}", f"run {m.run}" if m.run else "", "")
        console.print(table)
        total = Text.assemble(
            Text("Total: ", style="bold"), Text(format_cost(inv.total_per_hour), style="bold")
        )
        console.print(total, f" ({inv.pricing})")
        if inv.unpriced:
            console.print(Text("Not in the total, cost unknown:", style="yellow"))
            for line in inv.unpriced:
                console.print(f"  {line}")
    if inv.models_kept:
        console.print("Model versions: kept (--keep-models)")
    if inv.not_ours:
        console.print(Text("Not ours, left alone:", style="bold"))
        for foreign in inv.not_ours:
            console.print(f"  endpoint {foreign.name}: {foreign.reason}")
    for name in inv.not_found:
        console.print(f"Endpoint {name}: not found")
    if inv.others:
        console.print(
            f"{inv.others} other endpoint(s) without {CREATED_BY_TAG}={APP_TAG}: not listed, left alone"
        )
    for problem in inv.problems:
        console.print(Text(f"Could not list: {problem}", style="red"))


def _render_results(console: Console, inv: Inventory, results: list[Result]) -> None:
    table = Table(title="Teardown", title_justify="left")
    table.add_column("Kind", no_wrap=True)
    table.add_column("Name", overflow="fold")
    table.add_column("Result", overflow="fold")
    for r in results:
        outcome = Text("deleted", style="green") if r.ok else Text(f"FAILED: {r.error}", style="red")
        table.add_row(r.kind, r.name, outcome)
    console.print(table)
    failed = [r for r in results if not r.ok]
    summary = f"Deleted {len(results) - len(failed)} of {len(results)}"
    if failed:
        names = ", ".join(f"{r.kind} {r.name}" for r in failed)
        console.print(
            Text(f"{summary}; failed: {names}. Re-run to retry (deleting is idempotent).", style="red")
        )
    else:
        console.print(Text(f"{summary}.", style="green"))
    if inv.backend == "azureml" and any(r.ok and r.kind == "endpoint" for r in results):
        console.print(
            "Azure ML finishes deleting endpoints in the background (a few minutes); billing stops "
            "when the deployments are gone. Check with `az ml online-endpoint list`."
        )


if __name__ == "__main__":
    sys.exit(cli.run(main))
