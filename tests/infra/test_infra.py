"""Offline checks of the Azure infrastructure (infra/, azure.yaml): no Azure, no az, no bicep CLI.

- checkov (`checkov -d infra --framework bicep --skip-download`) passes, and every
  `// checkov:skip=CKV_...:reason` beside a resource has a reason and matches a check checkov really
  skipped there (no stale skips).
- The Bicep is parsed with pycep-parser (the parser checkov itself uses) and the Function App's
  app settings are compared with `core.settings.Settings`: the app's own setting names are exactly
  `Settings.model_fields - OFFLINE_ONLY` (no drift either way), their defaults agree, every
  connection is identity-based and no value looks like a secret; the app's own secrets
  (KEY_VAULT_REFERENCES) are Key Vault references resolved as the app identity, never values.
- Shape checks: module files, Event Grid filters (the blob subscription against the real blob
  trigger and `core.naming.is_dataset_blob`; the job-events subscription against the Event Grid
  trigger `on_job_status_changed` and the terminal Azure ML job statuses the backend knows), Flex
  Consumption / Python 3.11 / user-assigned identity, storage hardening, role assignments (ids,
  scopes, a comment each), outputs the README's next steps use, azd files, and the postdeploy hook
  run against a fake `az`.

Tool environment: checkov pins packages older than the app's (packaging, networkx, ...), so it and
its pycep-parser live in their own venv, `.tools/checkov-venv` (requirements-infra.txt, created by
scripts/setup.sh). Parsing runs there in a subprocess that prints pycep's JSON.

Fallback parser: if pycep cannot parse a file (new Bicep syntax it does not know yet), the app
setting names are read from the text instead: the keys of the object literal `var appSettings =
{...}` in main.bicep and `var hostSettings = {...}` in modules/functionapp.bicep
(`_object_literal_keys`). A test keeps both parsers in agreement while pycep still parses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.naming import is_dataset_blob
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MODULES = INFRA / "modules"
POSTDEPLOY = INFRA / "postdeploy.bicep"
HOOK = INFRA / "hooks" / "postdeploy.sh"
TOOLS_VENV = Path(os.environ.get("INFRA_TOOLS_VENV", ROOT / ".tools" / "checkov-venv"))
TOOLS_PYTHON = TOOLS_VENV / "bin" / "python"
CHECKOV = TOOLS_VENV / "bin" / "checkov"

# Settings fields that are deliberately NOT app settings of the Azure Function App.
OFFLINE_ONLY = {
    # The offline stack (BACKEND=local, devhost) only.
    "LOCAL_RUN_DIR",
    "LOCAL_MAX_STEPS",
    "LOCAL_LEARNING_RATE",
    "LOCAL_JOB_EVENTS_URL",
    # A connection string (Azurite / local). Forbidden in Azure: every connection is identity-based.
    "DatasetsStorage",
    # Alternative to DatasetsStorage__accountName. Azure uses the account name, which gives the host
    # both the blob endpoint and the queue endpoint the blob trigger needs for its poison queue
    # (a blobServiceUri alone would need a queueServiceUri setting too, which Settings does not read).
    "DatasetsStorage__blobServiceUri",
}

# Sensitive Settings fields (repr=False) that Azure gives the app as Key Vault references:
# setting -> main.bicep parameter naming the secret in the deployment's vault. The app setting is
# `empty(<param>) ? '' : '@Microsoft.KeyVault(VaultName=...;SecretName=${<param>})'`, so its
# default ('' = unset = None) comes from the secret-name parameter, and the value itself is never a
# template parameter, a literal or a deployment output.
KEY_VAULT_REFERENCES = {
    "NOTIFY_WEBHOOK_URL": "notifyWebhookUrlSecretName",  # may carry a token
    "NOTIFY_WEBHOOK_SECRET": "notifyWebhookSecretName",  # the HMAC signing key
}
# App settings the template derives from the deployment itself (resource names, the identity, the
# subscription) or fixes for Azure, so no parameter default to compare with Settings.
DEPLOYMENT_DERIVED = {
    "BACKEND",
    "DatasetsStorage__accountName",
    "DatasetsStorage__credential",
    "DatasetsStorage__clientId",
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_RESOURCE_GROUP",
    "AZUREML_WORKSPACE",
    "AI_PROJECT_NAME",
    "AZURE_CLIENT_ID",
    "AZUREML_DATASTORE",
    # Fixed 'true' in Azure (Settings default False): the postdeploy step subscribes the app to the
    # workspace's RunStatusChanged events, so the job's end arrives by event.
    "JOB_STATUS_EVENTS",
}
# The @secure() webhook keys postdeploy.bicep passes to its modules (never app settings).
WEBHOOK_KEY_PARAMS = {"blobsExtensionKey", "eventGridExtensionKey"}
# The Event Grid-triggered function the job-events subscription delivers to (triggers/).
JOB_EVENTS_FUNCTION = "on_job_status_changed"
KEY_VAULT_REFERENCE = re.compile(
    r"@Microsoft\.KeyVault\(VaultName=\$\{keyVaultName\};SecretName=\$\{(\w+)\}\)"
)

# Names owned by the Functions host / platform, not by core/settings.py.
HOST_OWNED_PREFIXES = (
    "FUNCTIONS_",
    "AzureWebJobsStorage",
    "APPLICATIONINSIGHTS_",
    "WEBSITE_",
    "SCM_",
    "AzureFunctionsJobHost__",
)
# Exactly the host settings the template sets: identity-based host storage, and Application Insights
# with Entra ID auth (local auth is disabled on the component, so the connection string only
# identifies it; APPLICATIONINSIGHTS_AUTHENTICATION_STRING makes the host use the identity).
EXPECTED_HOST_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Flex Consumption rejects these (runtime and package are in functionAppConfig), and a plain
# AzureWebJobsStorage would be a connection string.
FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "AzureWebJobsStorage",
    "DatasetsStorage",
}
# What a secret (or an expression that produces one) looks like in pycep's JSON or in Bicep text.
SECRET_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"AccountKey=",
        r"SharedAccessSignature",
        r"DefaultEndpointsProtocol=",
        r"\bsig=",
        r"\blist[A-Z]\w*\(",  # listKeys(, listAccountSas(, listSecrets(, ...
        r"listkeys",
        r'"list_func"',  # pycep's node for any list*() call
        r"primaryKey|secondaryKey|primaryConnectionString|accountSasToken|password",
    )
]

# Built-in role definition ids (same in every tenant) and where the app identity must hold them.
ROLE_IDS = {
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Storage Blob Data Reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "AzureML Data Scientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
}
# (role, scope symbol in roles.bicep; "resourceGroup" = no scope) for the app's identity.
REQUIRED_APP_ROLES = {
    ("Contributor", "resourceGroup"),  # seed
    ("Storage Blob Data Reader", "hubStorage"),  # seed
    ("AcrPull", "registry"),  # seed
    ("AzureML Data Scientist", "project"),
    ("Storage Blob Data Owner", "hostStorage"),
    ("Storage Queue Data Contributor", "hostStorage"),
    ("Storage Table Data Contributor", "hostStorage"),
    ("Storage Blob Data Contributor", "datasets"),
    ("Key Vault Secrets User", "keyVault"),  # resolves KEY_VAULT_REFERENCES
}

SKIP_COMMENT = re.compile(r"checkov:skip=([A-Za-z0-9_\-]+)(?::(.*))?$")

# Runs in the tool venv: parse Bicep files / snippets with pycep, print JSON.
_PYCEP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from pycep import BicepParser
    request = json.load(sys.stdin)
    parser = BicepParser()
    out = {"files": {}, "texts": {}}
    for kind, items in (("files", request.get("files", {})), ("texts", request.get("texts", {}))):
        for key, value in items.items():
            try:
                parsed = parser.parse(file_path=Path(value)) if kind == "files" else parser.parse(text=value)
                out[kind][key] = {"ok": True, "json": parsed}
            except Exception as exc:
                out[kind][key] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
    json.dump(out, sys.stdout, default=str)
    """
)


def _require_tools() -> None:
    if not TOOLS_PYTHON.exists() or not CHECKOV.exists():
        pytest.fail(
            f"{TOOLS_VENV.relative_to(ROOT) if TOOLS_VENV.is_relative_to(ROOT) else TOOLS_VENV} is missing: "
            "run scripts/setup.sh (it installs requirements-infra.txt there: checkov + pycep-parser)"
        )


def _run_pycep(files: dict[str, Path] | None = None, texts: dict[str, str] | None = None) -> dict[str, Any]:
    _require_tools()
    request = {"files": {k: str(v) for k, v in (files or {}).items()}, "texts": texts or {}}
    proc = subprocess.run(
        [str(TOOLS_PYTHON), "-c", _PYCEP_SCRIPT],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"pycep subprocess failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def _bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def _rel(path: Path) -> str:
    return path.relative_to(INFRA).as_posix()


@cache
def _parsed_all() -> dict[str, dict[str, Any]]:
    """pycep result per infra file (relative path): {"ok": bool, "json" | "error"}."""
    return _run_pycep(files={_rel(p): p for p in _bicep_files()})["files"]


def _bicep(rel: str) -> dict[str, Any]:
    result = _parsed_all()[rel]
    assert result["ok"], f"pycep cannot parse infra/{rel}: {result['error']}"
    return result["json"]


def _text(rel: str) -> str:
    return (INFRA / rel).read_text(encoding="utf-8")


# ------------------------------------------------------------------ fallback parser (text level)


def _object_literal(text: str, var_name: str) -> str:
    """The `{...}` of `var <var_name> = {` (braces matched, strings and // comments skipped)."""
    match = re.search(rf"^var\s+{re.escape(var_name)}\s*=\s*\{{", text, re.MULTILINE)
    assert match, f"no `var {var_name} = {{` in the file"
    depth, i, start = 0, match.end() - 1, match.end() - 1
    in_string = False
    while i < len(text):
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == "'":
                in_string = False
        elif c == "'":
            in_string = True
        elif text.startswith("//", i):
            i = text.index("\n", i)
            continue
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
        i += 1
    raise AssertionError(f"unbalanced braces in var {var_name}")


def _object_literal_keys(text: str, var_name: str) -> dict[str, str]:
    """Top-level `key: value` pairs of an object literal (one per line, as Bicep writes them)."""
    body = _object_literal(text, var_name)[1:-1]
    pairs: dict[str, str] = {}
    depth = 0
    for raw in body.splitlines():
        line = raw.strip()
        if depth == 0 and line and not line.startswith("//"):
            m = re.match(r"^'?([A-Za-z_][A-Za-z0-9_\-]*)'?\s*:\s*(.*)$", line)
            if m:
                pairs[m.group(1)] = m.group(2)
        code = re.sub(r"'(?:[^'\\]|\\.)*'", "''", line).split("//")[0]
        depth += code.count("{") + code.count("[") + code.count("(")
        depth -= code.count("}") + code.count("]") + code.count(")")
    return pairs


# ------------------------------------------------------------------ app settings from the Bicep


def _app_settings_values() -> dict[str, Any]:
    """Every app setting the template gives the Function App: name -> pycep value (or Bicep text).

    main.bicep's `appSettings` (the app's own settings, passed to the module as `appSettings`) plus
    functionapp.bicep's `hostSettings`; the module turns `union(appSettings, hostSettings)` into
    siteConfig.appSettings.
    """
    parsed = _parsed_all()
    if parsed["main.bicep"]["ok"] and parsed["modules/functionapp.bicep"]["ok"]:
        app = _bicep("main.bicep")["variables"]["appSettings"]["value"]
        host = _bicep("modules/functionapp.bicep")["variables"]["hostSettings"]["value"]
    else:  # documented fallback (module docstring)
        app = _object_literal_keys(_text("main.bicep"), "appSettings")
        host = _object_literal_keys(_text("modules/functionapp.bicep"), "hostSettings")
    overlap = set(app) & set(host)
    assert not overlap, f"set both by main.bicep and the module: {overlap}"
    return {**app, **host}


def _ref(*path: str) -> Any:
    """pycep's node for `a.b.c` (right-nested property accessors)."""
    node: Any = path[-1]
    for part in reversed(path[:-1]):
        node = {"operator": {"type": "property_accessor", "operands": {"operand_1": part, "operand_2": node}}}
    return node


def _is_host_owned(name: str) -> bool:
    return name.startswith(HOST_OWNED_PREFIXES)


def _looks_secret(value: Any) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value)
    return [p.pattern for p in SECRET_PATTERNS if p.search(text)]


def test_app_settings_are_wired_into_the_function_app():
    main = _bicep("main.bicep")
    module = main["modules"]["functionApp"]
    assert module["detail"]["path"] == "modules/functionapp.bicep"
    assert module["config"]["params"]["appSettings"] == "appSettings"
    site = _bicep("modules/functionapp.bicep")["resources"]["functionApp"]["config"]
    loop = site["properties"]["siteConfig"]["appSettings"]
    assert loop["loop_type"]["type"] == "object"
    assert "union" in loop["loop_type"]["detail"]["object_name"]
    assert "'appSettings'" in loop["loop_type"]["detail"]["object_name"]
    assert "'hostSettings'" in loop["loop_type"]["detail"]["object_name"]
    assert loop["config"] == {"name": _ref("setting", "key"), "value": _ref("setting", "value")}


def test_app_settings_are_exactly_what_settings_reads():
    names = set(_app_settings_values())
    app_names = {n for n in names if not _is_host_owned(n)}
    expected = set(Settings.model_fields) - OFFLINE_ONLY

    fields = set(Settings.model_fields)
    assert not OFFLINE_ONLY - fields, f"stale OFFLINE_ONLY entries: {OFFLINE_ONLY - fields}"
    assert not {f for f in Settings.model_fields if _is_host_owned(f)}, "a Settings field looks host-owned"
    assert sorted(expected - app_names) == [], "Settings fields missing from infra/main.bicep appSettings"
    assert sorted(app_names - expected) == [], "app settings in the Bicep that Settings does not read"
    assert {n for n in names if _is_host_owned(n)} == EXPECTED_HOST_SETTINGS
    assert not names & FORBIDDEN_SETTINGS


def test_fallback_parser_agrees_with_pycep():
    main, module = _bicep("main.bicep"), _bicep("modules/functionapp.bicep")
    assert set(_object_literal_keys(_text("main.bicep"), "appSettings")) == set(
        main["variables"]["appSettings"]["value"]
    )
    assert set(_object_literal_keys(_text("modules/functionapp.bicep"), "hostSettings")) == set(
        module["variables"]["hostSettings"]["value"]
    )


def test_connections_are_identity_based():
    values = _app_settings_values()
    for prefix in ("AzureWebJobsStorage", "DatasetsStorage"):
        assert prefix not in values, f"{prefix} would be a connection string"
        assert values[f"{prefix}__credential"] == "managedidentity"
        assert f"{prefix}__accountName" in values
        assert f"{prefix}__clientId" in values
    main_vars = _bicep("main.bicep")["variables"]["appSettings"]["value"]
    for name in ("DatasetsStorage__clientId", "AZURE_CLIENT_ID"):
        assert main_vars[name] == _ref("identity", "outputs", "clientId")
    assert values["AzureWebJobsStorage__clientId"] == "identityClientId"
    auth = values["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert auth == "ClientId=${identityClientId};Authorization=AAD"
    # The connection string only identifies the component because local auth is disabled on it.
    appi = _bicep("modules/monitoring.bicep")["resources"]["appInsights"]["config"]["properties"]
    assert appi["DisableLocalAuth"] is True
    assert values["AZUREML_WORKSPACE"] == values["AI_PROJECT_NAME"]
    assert values["BACKEND"] == "azureml"


def test_no_app_setting_value_looks_like_a_secret():
    for name, value in _app_settings_values().items():
        assert not _looks_secret(value), f"app setting {name} looks like a secret: {value}"
    # The chain that feeds the values: every module parameter main.bicep passes and every output.
    for rel in ("main.bicep", "postdeploy.bicep"):
        for symbol, module in _bicep(rel).get("modules", {}).items():
            for param, value in module["config"]["params"].items():
                if param in WEBHOOK_KEY_PARAMS:  # the @secure() webhook keys, never app settings
                    continue
                assert not _looks_secret(value), f"{rel}: module {symbol} param {param} looks like a secret"
    for path in _bicep_files():
        for name, output in _bicep(_rel(path)).get("outputs", {}).items():
            assert not _looks_secret(output["value"]), f"{_rel(path)}: output {name} looks like a secret"
        # App settings may name a variable (the Key Vault references do): no variable computes a key.
        for name, var in _bicep(_rel(path)).get("variables", {}).items():
            assert not _looks_secret(var["value"]), f"{_rel(path)}: var {name} looks like a secret"


def test_secret_detector_flags_key_based_values():
    snippet = textwrap.dedent(
        """
        resource a 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
          name: 'x'
        }
        var s = {
          A: 'DefaultEndpointsProtocol=https;AccountName=${a.name};AccountKey=${a.listKeys().keys[0].value}'
          B: listKeys(a.id, '2023-05-01').keys[0].value
          C: a.listAccountSas('2023-05-01', {}).accountSasToken
          D: 'managedidentity'
          E: '@Microsoft.KeyVault(VaultName=${a.name};SecretName=notify-webhook-secret)'
          F: empty(n) ? '' : '@Microsoft.KeyVault(VaultName=kv;SecretName=${n})'
          G: a.listKeys().keys[0].value
        }
        """
    )
    result = _run_pycep(texts={"snippet": snippet})["texts"]["snippet"]
    assert result["ok"], result.get("error")
    values = result["json"]["variables"]["s"]["value"]
    # A Key Vault reference names a secret, it is not one (E, F); listKeys still is, however called.
    assert [k for k, v in values.items() if _looks_secret(v)] == ["A", "B", "C", "G"]


def _param_default(params: dict[str, Any], value: Any) -> tuple[bool, Any]:
    """(True, default) if `value` is a parameter reference or string(parameter)."""
    if isinstance(value, str) and value in params:
        return True, params[value].get("default")
    if isinstance(value, dict) and value.get("function", {}).get("type") == "string":
        ref = value["function"]["parameters"].get("value_to_convert")
        if isinstance(ref, str) and ref in params:
            return True, params[ref].get("default")
    return False, None


def test_app_setting_defaults_match_settings_defaults():
    main = _bicep("main.bicep")
    params = main["parameters"]
    # An empty app setting reads as unset, so a '' parameter default means the Settings default None
    # (ENDPOINT_TTL_HOURS, BASE_MODEL_VERSION, ...).
    assert Settings.model_config.get("env_ignore_empty") is True
    compared = 0
    for name, value in main["variables"]["appSettings"]["value"].items():
        if name in KEY_VAULT_REFERENCES:
            # '' unless a secret name is given: the default is unset, as in Settings.
            # (The expression itself: test_app_secrets_are_key_vault_references.)
            assert Settings.model_fields[name].default is None, name
            assert params[KEY_VAULT_REFERENCES[name]].get("default") == "", name
            compared += 1
            continue
        is_param, default = _param_default(params, value)
        if not is_param:
            assert name in DEPLOYMENT_DERIVED, f"{name}: not a parameter, so add one (or list it as derived)"
            continue
        assert name not in DEPLOYMENT_DERIVED, f"{name} is a parameter: drop it from DEPLOYMENT_DERIVED"
        want = Settings.model_fields[name].default
        if want is None:
            assert default == "", f"{name}: Bicep default {default!r}, Settings default None (use '')"
        elif isinstance(want, float):
            assert float(default) == want, f"{name}: Bicep {default!r} != Settings {want!r}"
        else:
            assert type(want)(default) == want, f"{name}: Bicep {default!r} != Settings {want!r}"
        compared += 1
    assert compared >= 25
    assert not DEPLOYMENT_DERIVED - set(main["variables"]["appSettings"]["value"]), "stale DEPLOYMENT_DERIVED"


def _resolve_variable(module: dict[str, Any], value: Any) -> Any:
    """The value of a variable reference (one level), else the value itself."""
    if isinstance(value, str) and value in module.get("variables", {}):
        return module["variables"][value]["value"]
    return value


def test_app_secrets_are_key_vault_references():
    main = _bicep("main.bicep")
    params, app = main["parameters"], main["variables"]["appSettings"]["value"]
    # Every sensitive Settings field is either kept out of Azure or a Key Vault reference there.
    sensitive = {n for n, f in Settings.model_fields.items() if f.repr is False}
    assert sensitive - OFFLINE_ONLY == set(KEY_VAULT_REFERENCES)
    for name, secret_param in KEY_VAULT_REFERENCES.items():
        node = _resolve_variable(main, app[name])
        empty = {"function": {"type": "empty", "parameters": {"item_to_test": secret_param}}}
        reference = f"@Microsoft.KeyVault(VaultName=${{keyVaultName}};SecretName=${{{secret_param}}})"
        assert node == {
            "operator": {
                "type": "conditional",
                "operands": {"condition": empty, "true_value": "", "false_value": reference},
            }
        }, f"{name} must be '' or a Key Vault reference naming the secret {secret_param}"
        assert "@Microsoft.KeyVault(" in reference
        assert KEY_VAULT_REFERENCE.fullmatch(reference).group(1) == secret_param
        assert not _looks_secret(reference)
        # The parameter is a secret's name, defaulting to off; no parameter carries the value.
        assert params[secret_param]["type"] == "string" and params[secret_param].get("default") == ""
    value_params = {p for p in params if "notifywebhook" in p.lower() and not p.endswith("SecretName")}
    assert value_params == set(), f"parameters that would carry a secret value: {value_params}"
    parameters_json = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for secret_param in KEY_VAULT_REFERENCES.values():
        if secret_param in parameters_json:  # azd may map the name, never a literal secret
            assert re.fullmatch(r"\$\{[A-Z_]+(?:=[\w-]*)?\}", parameters_json[secret_param]["value"])
    # The vault in the references is the deployment's (the hub's), the one the role is granted on.
    hub_vault = _ref("aiHub", "outputs", "keyVaultName")
    assert main["variables"]["keyVaultName"]["value"] == hub_vault
    assert main["modules"]["roles"]["config"]["params"]["keyVaultName"] == hub_vault
    assert _bicep("modules/aihub.bicep")["outputs"]["keyVaultName"]["value"] == _ref("keyVault", "name")
    outputs = main["outputs"]
    assert outputs["KEY_VAULT_NAME"]["value"] == hub_vault
    assert outputs["NOTIFY_SECRET_COMMAND"]["value"].startswith(
        "az keyvault secret set --vault-name ${aiHub.outputs.keyVaultName} --name notify-webhook-secret "
    )
    # Text level too (what the fallback parser would see).
    text = _text("main.bicep")
    literal = _object_literal_keys(text, "appSettings")
    for name, secret_param in KEY_VAULT_REFERENCES.items():
        line = re.search(rf"^var {re.escape(literal[name])} = (.*)$", text, re.MULTILINE)
        assert line and KEY_VAULT_REFERENCE.search(line.group(1)).group(1) == secret_param, name


def test_app_identity_resolves_key_vault_references():
    # The vault authorizes with RBAC (no access policies) ...
    vault = _bicep("modules/aihub.bicep")["resources"]["keyVault"]["config"]["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert "accessPolicies" not in vault
    # ... the app's identity holds Key Vault Secrets User on it ...
    roles = _bicep("modules/roles.bicep")
    assert roles["resources"]["keyVault"]["existing"]
    assert roles["resources"]["keyVault"]["config"]["name"] == "keyVaultName"
    assignments = _role_assignments().values()
    user = [a for a in assignments if a["role_id"] == ROLE_IDS["Key Vault Secrets User"]]
    assert [(a["principal"], a["scope"]) for a in user] == [("appPrincipalId", "keyVault")]
    # ... (and the deployer, when known, may store the secrets) ...
    officer = [a for a in assignments if a["role_id"] == ROLE_IDS["Key Vault Secrets Officer"]]
    assert [(a["principal"], a["scope"]) for a in officer] == [("deployerPrincipalId", "keyVault")]
    # ... the site resolves references as that identity (it has no system-assigned one) ...
    main = _bicep("main.bicep")
    site = _bicep("modules/functionapp.bicep")["resources"]["functionApp"]["config"]
    assert site["identity"]["type"] == "UserAssigned"
    assert site["identity"]["userAssignedIdentities"] == {"'${identityId}'": {}}
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityId"
    app_module = main["modules"]["functionApp"]["config"]
    assert app_module["params"]["identityId"] == _ref("identity", "outputs", "id")
    roles_params = main["modules"]["roles"]["config"]["params"]
    assert roles_params["appPrincipalId"] == _ref("identity", "outputs", "principalId")
    # ... and only once the role exists (references resolve when the host starts).
    assert "roles" in app_module["dependsOn"]


# ------------------------------------------------------------------ files, parameters, azd


def test_every_bicep_file_parses_with_pycep():
    failures = {rel: r["error"] for rel, r in _parsed_all().items() if not r["ok"]}
    assert failures == {}


def test_module_files_exist_and_are_all_used():
    referenced: set[Path] = set()
    for rel in ("main.bicep", "postdeploy.bicep"):
        for symbol, module in _bicep(rel).get("modules", {}).items():
            assert module["type"] == "local", f"{rel}: module {symbol} is not a local file"
            path = (INFRA / rel).parent / module["detail"]["path"]
            assert path.is_file(), f"{rel}: module {symbol} -> {path} does not exist"
            referenced.add(path.resolve())
    assert {p.resolve() for p in MODULES.glob("*.bicep")} == referenced


def test_main_parameters_json_matches_main_bicep():
    params = _bicep("main.bicep")["parameters"]
    doc = json.loads((INFRA / "main.parameters.json").read_text())
    assert {"environmentName", "location", "principalId"} <= set(doc["parameters"])
    for name, entry in doc["parameters"].items():
        assert name in params, f"main.parameters.json sets unknown parameter {name}"
        m = re.fullmatch(r"\$\{([A-Z_]+)(?:=(.*))?\}", str(entry["value"]))
        assert m, f"{name}: expected an azd ${{VAR}} or ${{VAR=default}} value"
        if m.group(2) is not None:
            assert m.group(2) == params[name].get("default"), f"{name}: default differs from main.bicep"
            assert params[name]["type"] == "string", f"{name}: azd substitutes strings only"


def test_postdeploy_parameters_json_matches_postdeploy_bicep():
    params = _bicep("postdeploy.bicep")["parameters"]
    doc = json.loads((INFRA / "postdeploy.parameters.json").read_text())
    for name, entry in doc["parameters"].items():
        assert name in params
        assert entry["value"] == params[name].get("default")
    for key in WEBHOOK_KEY_PARAMS:
        assert key not in doc["parameters"]  # secret: the hook passes it in a temp file
        assert {d["type"] for d in params[key]["decorators"]} >= {"secure"}
        assert params[key].get("default") is None


def test_azure_yaml():
    doc = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert doc["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert doc["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    hook = doc["hooks"]["postdeploy"]["posix"]
    assert hook["shell"] == "sh"
    assert (ROOT / hook["run"]).resolve() == HOOK.resolve()
    assert HOOK.stat().st_mode & stat.S_IXUSR
    # azd finds the app by this tag.
    site = _bicep("modules/functionapp.bicep")["resources"]["functionApp"]["config"]
    assert site["tags"]["function"]["parameters"]["arg_2"] == {"'azd-service-name'": "serviceName"}
    assert _bicep("modules/functionapp.bicep")["parameters"]["serviceName"]["default"] == "api"


def test_outputs_for_the_readme_next_steps():
    outputs = {name: o["value"] for name, o in _bicep("main.bicep")["outputs"].items()}
    for name in (
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_APP_NAME",
        "DATASETS_STORAGE_ACCOUNT",
        "DATASETS_CONTAINER",
        "AI_PROJECT_NAME",
        "CONNECTION_NAME",
        "UPLOAD_COMMAND",
        "RUNS_URL",
        "STATUS_URL_PATTERN",
        "STATUS_KEY_COMMAND",
    ):
        assert name in outputs, f"main.bicep has no output {name}"
    assert outputs["UPLOAD_COMMAND"].startswith("az storage blob upload --auth-mode login ")
    assert "-c ${datasetsContainerName}" in outputs["UPLOAD_COMMAND"]
    assert "/runtime/webhooks/durabletask/instances/<instance id>" in outputs["STATUS_URL_PATTERN"]
    assert outputs["RUNS_URL"].endswith("/api/runs")
    assert outputs["CONNECTION_NAME"] == "connectionName"
    assert "systemKeys.durabletask_extension" in outputs["STATUS_KEY_COMMAND"]
    # The hook reads these from the azd environment: they must be main.bicep outputs.
    hook_vars = set(re.findall(r"\$\{?((?:AZURE|DATASETS|AI)_[A-Z_]+)", HOOK.read_text()))
    assert not hook_vars - set(outputs), f"the hook reads {hook_vars - set(outputs)}: not main.bicep outputs"
    assert "AI_PROJECT_NAME" in hook_vars  # the workspace of the job-events system topic


# ------------------------------------------------------------------ resources


def test_function_app_is_flex_consumption_python_311_with_user_assigned_identity():
    module = _bicep("modules/functionapp.bicep")
    plan = module["resources"]["plan"]["config"]
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True  # Linux
    site = module["resources"]["functionApp"]["config"]
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["keyVaultReferenceIdentity"] == "identityId"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    python = module["parameters"]["pythonVersion"]
    assert python["default"] == "3.11"
    assert {"type": "allowed", "argument": ["3.11"]} in python["decorators"]
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    for policy in ("ftpCredentials", "scmCredentials"):
        assert module["resources"][policy]["config"]["properties"] == {"allow": False}


def test_storage_accounts_are_identity_only_private_blobs_tls12():
    storage = _bicep("modules/storage.bicep")["resources"]
    for account in ("datasets", "host"):
        props = storage[account]["config"]["properties"]
        assert props["allowBlobPublicAccess"] is False
        assert props["minimumTlsVersion"] == "TLS1_2"
        # Compatible with Flex Consumption: deployment storage and AzureWebJobsStorage use the identity.
        assert props["allowSharedKeyAccess"] is False
        assert props["supportsHttpsTrafficOnly"] is True
    for container in ("datasetsContainer", "deploymentContainer"):
        assert storage[container]["config"]["properties"] == {"publicAccess": "None"}
    assert storage["datasetsContainer"]["config"]["name"] == "datasetsContainerName"
    assert _bicep("main.bicep")["parameters"]["datasetsContainerName"]["default"] == "datasets"
    # The hub's storage keeps shared keys (Azure ML system datastores) but no public blobs, TLS 1.2.
    hub = _bicep("modules/aihub.bicep")["resources"]["storage"]["config"]["properties"]
    assert hub["allowBlobPublicAccess"] is False
    assert hub["minimumTlsVersion"] == "TLS1_2"


def test_ai_hub_and_project():
    res = _bicep("modules/aihub.bicep")["resources"]
    hub, project = res["hub"]["config"], res["project"]["config"]
    assert hub["kind"] == "Hub"
    assert project["kind"] == "Project"
    assert project["properties"]["hubResourceId"] == _ref("hub", "id")
    for dependency, symbol in (
        ("storageAccount", "storage"),
        ("keyVault", "keyVault"),
        ("containerRegistry", "registry"),
        ("applicationInsights", "appInsights"),
    ):
        assert hub["properties"][dependency] == _ref(symbol, "id")
    assert res["registry"]["config"]["properties"]["adminUserEnabled"] is False
    assert res["keyVault"]["config"]["properties"]["enableRbacAuthorization"] is True
    datastore = res["datastore"]["config"]
    assert datastore["parent"] == "project"
    assert datastore["properties"]["credentials"] == {"credentialsType": "None"}


def _role_assignments() -> dict[str, dict[str, Any]]:
    module = _bicep("modules/roles.bicep")
    role_ids = module["variables"]["roleIds"]["value"]
    found = {}
    for symbol, res in module["resources"].items():
        if res["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = res["config"].get("config", res["config"])  # conditional resources nest once more
        props = config["properties"]
        ref = props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        key = ref["operator"]["operands"]["operand_2"]
        found[symbol] = {
            "role_id": role_ids[key],
            "scope": config.get("scope", "resourceGroup"),
            "principal": props["principalId"],
            "description": props.get("description", ""),
        }
    return found


def test_role_assignments_grant_what_the_readme_table_says():
    module = _bicep("modules/roles.bicep")
    assert module["variables"]["roleIds"]["value"] == {
        "contributor": ROLE_IDS["Contributor"],
        "storageBlobDataReader": ROLE_IDS["Storage Blob Data Reader"],
        "storageBlobDataContributor": ROLE_IDS["Storage Blob Data Contributor"],
        "storageBlobDataOwner": ROLE_IDS["Storage Blob Data Owner"],
        "storageQueueDataContributor": ROLE_IDS["Storage Queue Data Contributor"],
        "storageTableDataContributor": ROLE_IDS["Storage Table Data Contributor"],
        "acrPull": ROLE_IDS["AcrPull"],
        "azureMLDataScientist": ROLE_IDS["AzureML Data Scientist"],
        "monitoringMetricsPublisher": ROLE_IDS["Monitoring Metrics Publisher"],
        "keyVaultSecretsUser": ROLE_IDS["Key Vault Secrets User"],
        "keyVaultSecretsOfficer": ROLE_IDS["Key Vault Secrets Officer"],
    }
    names = {v: k for k, v in ROLE_IDS.items()}
    app = [a for a in _role_assignments().values() if a["principal"] == "appPrincipalId"]
    granted = {(names[a["role_id"]], a["scope"]) for a in app}
    assert sorted(REQUIRED_APP_ROLES - granted) == []
    # Scopes are the resources main.bicep passes in.
    res = module["resources"]
    assert res["hubStorage"]["existing"] and res["hubStorage"]["config"]["name"] == "hubStorageAccountName"
    assert res["hostStorage"]["config"]["name"] == "hostAccountName"
    assert res["datasets"]["config"]["name"] == "datasetsAccountName"
    assert res["project"]["config"]["name"] == "projectName"
    roles_params = _bicep("main.bicep")["modules"]["roles"]["config"]["params"]
    assert roles_params["appPrincipalId"] == _ref("identity", "outputs", "principalId")


def test_every_role_assignment_says_why():
    lines = _text("modules/roles.bicep").splitlines()
    assignments = _role_assignments()
    for symbol, assignment in assignments.items():
        index = next(i for i, line in enumerate(lines) if line.startswith(f"resource {symbol} "))
        comment = []
        while lines[index - 1 - len(comment)].startswith("//"):
            comment.append(lines[index - 1 - len(comment)])
        assert len(" ".join(comment)) > 60, f"{symbol}: no comment above it saying why"
        assert assignment["description"], f"{symbol}: no description"
    assert len(assignments) >= len(REQUIRED_APP_ROLES)


def test_event_grid_subscription_feeds_the_blob_trigger_with_jsonl_from_the_container():
    import function_app
    from devhost.functions import app_functions  # the SDK indexes an app only once per process

    triggers = {
        f.get_function_name(): f.get_trigger().get_dict_repr()
        for f in app_functions(function_app.app)
        if f.get_trigger().get_dict_repr()["type"] == "blobTrigger"
    }
    assert set(triggers) == {"on_dataset_uploaded"}
    trigger = triggers["on_dataset_uploaded"]
    assert trigger["source"] == "EventGrid"
    assert trigger["connection"] == "DatasetsStorage"
    assert trigger["path"] == "%DATASETS_CONTAINER%/{name}"

    postdeploy = _bicep("postdeploy.bicep")
    assert postdeploy["parameters"]["functionName"]["default"] == "on_dataset_uploaded"
    postdeploy_json = json.loads((INFRA / "postdeploy.parameters.json").read_text())
    assert postdeploy_json["parameters"]["functionName"]["value"] == "on_dataset_uploaded"
    module = _bicep("modules/eventgrid.bicep")["resources"]
    topic = module["systemTopic"]["config"]["properties"]
    assert topic["topicType"] == "Microsoft.Storage.StorageAccounts"
    sub = module["blobCreated"]["config"]["properties"]
    assert sub["destination"]["endpointType"] == "WebHook"
    assert sub["destination"]["properties"]["endpointUrl"] == (
        "https://${functionAppHostName}/runtime/webhooks/blobs"
        "?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}"
    )
    flt = sub["filter"]
    assert flt["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert flt["subjectBeginsWith"] == "/blobServices/default/containers/${datasetsContainerName}/blobs/"
    assert flt["subjectEndsWith"] == ".jsonl"
    assert flt["isSubjectCaseSensitive"] is False

    # Evaluate the filter like Event Grid does, for the default container, against the app's rule.
    container = Settings.model_fields["DATASETS_CONTAINER"].default
    begins = flt["subjectBeginsWith"].replace("${datasetsContainerName}", container).lower()
    ends = flt["subjectEndsWith"].lower()

    def delivered(container_name: str, blob: str) -> bool:
        subject = f"/blobServices/default/containers/{container_name}/blobs/{blob}".lower()
        return subject.startswith(begins) and subject.endswith(ends)

    for blob in ("chats.jsonl", "support/chats.jsonl", "a/b/c/UPPER.JSONL", "support/_splits/r/train.jsonl"):
        assert delivered(container, blob), blob
    for blob in ("chats.json", "chats.jsonl.tmp", "notes.txt", "support/chats.csv"):
        assert not delivered(container, blob), blob
    assert not delivered("other", "chats.jsonl")
    assert not delivered(container + "2", "chats.jsonl")
    # Never stricter than the app: everything the app treats as a dataset is delivered.
    for blob in ("x.jsonl", "deep/er/x.JsonL", "reports2/x.jsonl"):
        assert is_dataset_blob(blob) and delivered(container, blob), blob


def test_job_events_subscription_sends_terminal_run_statuses_to_on_job_status_changed():
    from backends.azureml.workspace import JOB_STATE_BY_STATUS

    postdeploy = _bicep("postdeploy.bicep")
    assert postdeploy["parameters"]["jobEventsFunctionName"]["default"] == JOB_EVENTS_FUNCTION
    postdeploy_json = json.loads((INFRA / "postdeploy.parameters.json").read_text())
    assert postdeploy_json["parameters"]["jobEventsFunctionName"]["value"] == JOB_EVENTS_FUNCTION
    call = postdeploy["modules"]["jobEvents"]
    assert call["detail"]["path"] == "modules/jobevents.bicep"
    params = call["config"]["params"]
    assert params["functionName"] == "jobEventsFunctionName"
    assert params["eventGridExtensionKey"] == "eventGridExtensionKey"
    assert params["workspaceName"] == "workspaceName"
    assert params["location"] == _ref("workspace", "location")
    assert postdeploy["resources"]["workspace"]["existing"]

    module = _bicep("modules/jobevents.bicep")
    assert {d["type"] for d in module["parameters"]["eventGridExtensionKey"]["decorators"]} >= {"secure"}
    res = module["resources"]
    assert res["workspace"]["existing"] and res["workspace"]["config"]["name"] == "workspaceName"
    assert res["workspace"]["type"] == "Microsoft.MachineLearningServices/workspaces"
    topic = res["systemTopic"]["config"]["properties"]
    assert topic["topicType"] == "Microsoft.MachineLearningServices.Workspaces"
    assert topic["source"] == _ref("workspace", "id")
    sub = res["jobFinished"]["config"]["properties"]
    assert sub["eventDeliverySchema"] == "EventGridSchema"
    assert sub["destination"]["endpointType"] == "WebHook"
    # The Event Grid extension webhook takes the plain function name (the blob one wants Host.Functions.).
    assert sub["destination"]["properties"]["endpointUrl"] == (
        "https://${functionAppHostName}/runtime/webhooks/eventgrid"
        "?functionName=${functionName}&code=${eventGridExtensionKey}"
    )
    flt = sub["filter"]
    assert flt["includedEventTypes"] == ["Microsoft.MachineLearningServices.RunStatusChanged"]
    (status_filter,) = flt["advancedFilters"]
    assert status_filter["operatorType"] == "StringIn"
    assert status_filter["key"] == "data.runStatus"
    statuses = _resolve_variable(module, status_filter["values"])
    # Exactly the Azure ML statuses the backend treats as the job's end (Canceled: one l).
    terminal = {status for status, state in JOB_STATE_BY_STATUS.items() if state.terminal}
    assert sorted(statuses) == sorted(terminal) == ["Canceled", "Completed", "Failed", "NotResponding"]
    # Same delivery as the blob subscription: retry policy, and dead-lettering only if it has one.
    blob_sub = _bicep("modules/eventgrid.bicep")["resources"]["blobCreated"]["config"]["properties"]
    retry = {name: name for name in ("maxDeliveryAttempts", "eventTimeToLiveInMinutes")}
    assert sub["retryPolicy"] == blob_sub["retryPolicy"] == retry
    assert ("deadLetterDestination" in sub) == ("deadLetterDestination" in blob_sub)

    # The topic is on the workspace the jobs run in (AZUREML_WORKSPACE), which the hook passes as
    # workspaceName from the AI_PROJECT_NAME output; the app listens for the events there.
    main = _bicep("main.bicep")
    app = main["variables"]["appSettings"]["value"]
    assert app["AZUREML_WORKSPACE"] == main["outputs"]["AI_PROJECT_NAME"]["value"]
    assert 'workspaceName="$AI_PROJECT_NAME"' in HOOK.read_text()
    assert app["JOB_STATUS_EVENTS"] == "true"
    assert app["JOB_EVENT_FALLBACK_S"] == {
        "function": {"type": "string", "parameters": {"value_to_convert": "jobEventFallbackSeconds"}}
    }
    fallback = main["parameters"]["jobEventFallbackSeconds"]
    assert {"type": "min_value", "argument": 60} in fallback["decorators"]
    assert Settings(JOB_STATUS_EVENTS="true").JOB_STATUS_EVENTS is True


def test_job_events_webhook_names_the_event_grid_trigger():
    import function_app
    from devhost.functions import app_functions  # the SDK indexes an app only once per process

    triggers = {
        f.get_function_name()
        for f in app_functions(function_app.app)
        if f.get_trigger().get_dict_repr()["type"] == "eventGridTrigger"
    }
    assert triggers == {JOB_EVENTS_FUNCTION}


# ------------------------------------------------------------------ checkov


@cache
def _checkov() -> tuple[int, dict[str, Any], float]:
    _require_tools()
    import time

    started = time.monotonic()
    proc = subprocess.run(
        [str(CHECKOV), "-d", "infra", "--framework", "bicep", "--skip-download", "-o", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    elapsed = time.monotonic() - started
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        tail = proc.stderr[-3000:]
        raise AssertionError(f"checkov printed no JSON (exit {proc.returncode}):\n{tail}") from exc
    if isinstance(report, list):  # one entry per framework
        (report,) = report
    return proc.returncode, report, elapsed


def _skip_comments() -> list[tuple[str, int, str, str]]:
    """(file, line, check id, reason) for every checkov skip comment under infra/."""
    found = []
    for path in _bicep_files():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            m = SKIP_COMMENT.search(line)
            if m:
                found.append((_rel(path), number, m.group(1), (m.group(2) or "").strip()))
    return found


def test_checkov_passes():
    code, report, _elapsed = _checkov()
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == [], "checkov failed checks (fix them or skip one with a reason beside the resource)"
    assert summary["parsing_errors"] == 0, "checkov could not parse a Bicep file, so it did not scan it"
    assert code == 0
    # It really scanned the template, all of it.
    assert summary["passed"] >= 25
    scanned = {c["file_path"].lstrip("/") for c in report["results"]["passed_checks"]}
    scanned |= {c["file_path"].lstrip("/") for c in report["results"]["skipped_checks"]}
    for rel in ("modules/storage.bicep", "modules/functionapp.bicep", "modules/aihub.bicep"):
        assert rel in scanned


def test_every_checkov_skip_has_a_reason_and_is_used():
    comments = _skip_comments()
    assert comments, "expected the documented skips"
    for rel, line, check, reason in comments:
        assert check.startswith(("CKV_", "CKV2_")), f"infra/{rel}:{line}: {check}"
        assert line > 1 and "//" in (INFRA / rel).read_text().splitlines()[line - 1], f"infra/{rel}:{line}"
        assert len(reason) >= 30, f"infra/{rel}:{line}: skip of {check} needs a real reason"
    _code, report, _elapsed = _checkov()
    skipped = {(c["file_path"].lstrip("/"), c["check_id"]) for c in report["results"]["skipped_checks"]}
    stale = sorted({(rel, check) for rel, _line, check, _reason in comments} - skipped)
    assert stale == [], "skip comments for checks checkov does not run or that pass there"
    for c in report["results"]["skipped_checks"]:
        reason = c["check_result"].get("suppress_comment")
        assert reason not in (None, "", "No comment provided"), c["check_id"]


# ------------------------------------------------------------------ the postdeploy hook


FAKE_AZ = """#!/bin/sh
# Fake Azure CLI for tests/infra/test_infra.py: keys list answers each system key (--query
# systemKeys.<name>) after FAKE_AZ_KEY_AFTER calls for it.
case "$1 $2" in
  "functionapp keys")
    q=""; prev=""
    for a in "$@"; do if [ "$prev" = "--query" ]; then q="$a"; fi; prev="$a"; done
    case "$q" in
      systemKeys.blobs_extension) key="$FAKE_AZ_KEY" ;;
      systemKeys.eventgrid_extension) key="$FAKE_AZ_EG_KEY" ;;
      *) echo "fake az: unexpected query $q" >&2; exit 2 ;;
    esac
    f="$FAKE_AZ_DIR/calls-${q#systemKeys.}"
    n=$(cat "$f" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$f"
    if [ "$n" -ge "$FAKE_AZ_KEY_AFTER" ] && [ -n "$key" ]; then echo "$key"; fi ;;
  "deployment group")
    printf '%s\\n' "$@" > "$FAKE_AZ_DIR/argv"
    for a in "$@"; do
      case "$a" in @*) cat "${a#@}" >> "$FAKE_AZ_DIR/param-files"; echo >> "$FAKE_AZ_DIR/param-files" ;; esac
    done ;;
  *) echo "fake az: unexpected $*" >&2; exit 2 ;;
esac
"""


AZD_ENV = {
    "AZURE_RESOURCE_GROUP": "rg-test",
    "AZURE_FUNCTION_APP_NAME": "func-phi3ft-abc",
    "DATASETS_STORAGE_ACCOUNT": "stphi3ftdabc",
    "DATASETS_CONTAINER": "datasets",
    "AI_PROJECT_NAME": "proj-phi3ft-abc",
}


def _run_hook(
    tmp_path: Path,
    key: str,
    key_after: int,
    attempts: int = 5,
    via_azd: bool = False,
    eventgrid_key: str = "FakeEventGridKey_9876543210-xyz==",
) -> subprocess.CompletedProcess:
    """Run the hook with a fake `az` (and, with via_azd, the environment from a fake `azd`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(FAKE_AZ)
    az.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAKE_AZ_DIR": str(tmp_path),
        "FAKE_AZ_KEY": key,
        "FAKE_AZ_EG_KEY": eventgrid_key,
        "FAKE_AZ_KEY_AFTER": str(key_after),
        "POSTDEPLOY_KEY_ATTEMPTS": str(attempts),
        "POSTDEPLOY_KEY_DELAY_S": "0",
    }
    if via_azd:  # `azd env get-values` prints KEY="value" lines
        lines = "".join(f"echo '{k}=\"{v}\"'\n" for k, v in AZD_ENV.items())
        azd = bin_dir / "azd"
        azd.write_text(f"#!/bin/sh\necho 'OTHER=\"x\"'\n{lines}")
        azd.chmod(0o755)
    else:
        env.update(AZD_ENV)
    sh = shutil.which("sh", path="/usr/bin:/bin") or "/bin/sh"
    return subprocess.run([sh, str(HOOK)], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_postdeploy_hook_waits_for_the_key_and_deploys_event_grid(tmp_path):
    key = "FakeBlobsExtensionKey_0123456789-abc=="
    eventgrid_key = "FakeEventGridKey_9876543210-xyz=="
    proc = _run_hook(tmp_path, key=key, key_after=3, eventgrid_key=eventgrid_key)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "calls-blobs_extension").read_text().strip() == "3"
    assert (tmp_path / "calls-eventgrid_extension").read_text().strip() == "3"
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:3] == ["deployment", "group", "create"]
    assert argv[argv.index("--template-file") + 1] == str(POSTDEPLOY)
    assert argv[argv.index("--resource-group") + 1] == "rg-test"
    assert "functionAppName=func-phi3ft-abc" in argv
    assert "datasetsAccountName=stphi3ftdabc" in argv
    assert "datasetsContainerName=datasets" in argv
    assert "workspaceName=proj-phi3ft-abc" in argv
    assert f"@{INFRA / 'postdeploy.parameters.json'}" in argv
    # The keys travel in a parameters file, never on the command line or in the output.
    for secret in (key, eventgrid_key):
        assert not any(secret in a for a in argv)
        assert secret not in proc.stdout + proc.stderr
    chunks = (tmp_path / "param-files").read_text().split("\n\n")
    files = [json.loads(chunk) for chunk in chunks if chunk.strip()]
    assert {"value": key} in [f["parameters"].get("blobsExtensionKey") for f in files]
    assert {"value": eventgrid_key} in [f["parameters"].get("eventGridExtensionKey") for f in files]
    # Every parameter the files set is one postdeploy.bicep declares.
    declared = set(_bicep("postdeploy.bicep")["parameters"])
    assert all(set(f["parameters"]) <= declared for f in files)
    leftovers = [a[1:] for a in argv if a.startswith("@") and "postdeploy.parameters.json" not in a]
    assert leftovers and not any(Path(p).exists() for p in leftovers), "temporary key file not removed"


def test_postdeploy_hook_reads_the_azd_environment_when_run_by_hand(tmp_path):
    proc = _run_hook(tmp_path, key="k3y", key_after=1, via_azd=True)
    assert proc.returncode == 0, proc.stderr
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[argv.index("--resource-group") + 1] == "rg-test"
    assert "functionAppName=func-phi3ft-abc" in argv
    assert "datasetsAccountName=stphi3ftdabc" in argv
    assert "workspaceName=proj-phi3ft-abc" in argv


def test_postdeploy_hook_fails_when_the_key_never_appears(tmp_path):
    proc = _run_hook(tmp_path, key="", key_after=1, attempts=2)
    assert proc.returncode != 0
    assert "no blobs_extension key" in proc.stderr
    assert not (tmp_path / "argv").exists()


def test_postdeploy_hook_fails_when_the_eventgrid_key_never_appears(tmp_path):
    # E.g. code without the Event Grid trigger: nothing is deployed, not even the blob subscription.
    proc = _run_hook(tmp_path, key="k3y", key_after=1, attempts=2, eventgrid_key="")
    assert proc.returncode != 0
    assert "no eventgrid_extension key" in proc.stderr
    assert not (tmp_path / "argv").exists()


def test_postdeploy_hook_is_posix_sh():
    for shell in ("sh", "dash"):
        exe = shutil.which(shell)
        if exe:
            subprocess.run([exe, "-n", str(HOOK)], check=True)
    assert HOOK.read_text().startswith("#!/bin/sh\n")
    assert "[[" not in HOOK.read_text() and "function " not in HOOK.read_text()
