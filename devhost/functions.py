"""Index a Python v2 Function App the way the host does: through azure.functions' own indexing API.

`FunctionIndex.load("function_app")` imports the module, finds its `FunctionApp`/`DFApp`, and
sorts every function by its trigger binding (orchestrationTrigger, activityTrigger, httpTrigger,
blobTrigger, timerTrigger, eventGridTrigger). No hand-kept list: add a function to a blueprint and
it is served.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

_INDEXED: dict[int, list[Any]] = {}


def app_functions(app: func.FunctionRegister) -> list[Any]:
    """`app.get_functions()`, once per app: the SDK refuses a second call (it re-validates names
    against what it already indexed)."""
    if id(app) not in _INDEXED:
        _INDEXED[id(app)] = app.get_functions()
    return _INDEXED[id(app)]


@dataclass(frozen=True)
class Function:
    name: str
    bindings: list[dict[str, Any]]
    user_function: Callable[..., Any]

    def binding(self, kind: str) -> dict[str, Any] | None:
        return next((b for b in self.bindings if b["type"] == kind), None)

    @property
    def client_param(self) -> str | None:
        b = self.binding("durableClient")
        return b["name"] if b else None

    def call(self, **kwargs: Any) -> Any:
        """Invoke the user code (sync or async) and return its result."""
        result = self.user_function(**kwargs)
        if inspect.isawaitable(result):
            return asyncio.run(_await(result))
        return result

    async def acall(self, **kwargs: Any) -> Any:
        result = self.user_function(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


@dataclass
class HttpRoute:
    function: Function
    methods: set[str]
    pattern: re.Pattern[str]
    template: str

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.methods and method.upper() not in self.methods:
            return None
        m = self.pattern.fullmatch(path)
        return m.groupdict() if m else None


@dataclass
class FunctionIndex:
    orchestrators: dict[str, Function] = field(default_factory=dict)
    activities: dict[str, Function] = field(default_factory=dict)
    http: list[HttpRoute] = field(default_factory=list)
    blob: list[Function] = field(default_factory=list)
    timers: list[Function] = field(default_factory=list)
    event_grid: dict[str, Function] = field(default_factory=dict)  # by function name (the webhook's)

    @classmethod
    def load(cls, module_name: str = "function_app") -> FunctionIndex:
        module = importlib.import_module(module_name)
        apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
        if len(apps) != 1:
            raise RuntimeError(f"{module_name} must define exactly one FunctionApp/DFApp, found {len(apps)}")
        return cls.from_app(apps[0])

    @classmethod
    def from_app(cls, app: func.FunctionRegister) -> FunctionIndex:
        index = cls()
        for f in app_functions(app):
            fn = Function(
                f.get_function_name(), json.loads(f.get_function_json())["bindings"], f.get_user_function()
            )
            if b := fn.binding("orchestrationTrigger"):
                index.orchestrators[b.get("orchestration") or fn.name] = fn
            elif b := fn.binding("activityTrigger"):
                index.activities[b.get("activity") or fn.name] = fn
            elif b := fn.binding("httpTrigger"):
                template = (b.get("route") or fn.name).strip("/")
                methods = {m.upper() for m in b.get("methods") or []}
                index.http.append(HttpRoute(fn, methods, _route_regex(template), template))
            elif fn.binding("blobTrigger"):
                index.blob.append(fn)
            elif fn.binding("timerTrigger"):
                index.timers.append(fn)
            elif fn.binding("eventGridTrigger"):
                index.event_grid[fn.name] = fn
            else:
                raise RuntimeError(f"function {fn.name}: no trigger the dev host supports: {fn.bindings}")
        return index

    @property
    def names(self) -> list[str]:
        """Every function's name, sorted (what `/admin/host/status` lists)."""
        return sorted(
            [*self.orchestrators, *self.activities, *(r.function.name for r in self.http),
             *(f.name for f in self.blob), *(f.name for f in self.timers), *self.event_grid]
        )  # fmt: skip

    def route(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for route in self.http:
            params = route.match(method, path)
            if params is not None:
                return route, params
        return None


def _route_regex(template: str) -> re.Pattern[str]:
    """`runs/{instance_id}/cancel` → a regex with named groups (`{x:int}` constraints ignored)."""
    out, pos = [], 0
    for m in re.finditer(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\??\}", template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def resolve_setting_expressions(text: str, env: dict[str, str] | None = None) -> str:
    """Replace `%SETTING%` binding expressions with app settings, as the host does."""
    source = os.environ if env is None else env

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in source:
            raise KeyError(f"binding expression %{name}% names an app setting that is not set")
        return source[name]

    return re.sub(r"%([^%]+)%", sub, text)


def blob_path_regex(path: str) -> tuple[str, re.Pattern[str]]:
    """Split a blob trigger path (`container/{name}.jsonl`) into its container and a regex for
    the blob name (`{x}` matches any characters, including `/`, as the host's does)."""
    container, _, pattern = path.partition("/")
    out, pos = [], 0
    for m in re.finditer(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>.+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return container, re.compile("".join(out))
