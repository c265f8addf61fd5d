#!/usr/bin/env bash
# Secret scan (`make test`): detect-secrets over every file git tracks or would track (untracked
# but not ignored files too, so a new file is checked before its first commit), against the
# audited baseline .secrets.baseline. Fails when a finding is not in the baseline (a new secret
# or a new fake), when a baseline entry has not been audited, or when one was audited as real.
# The baseline's own filters (e.g. the vendored OpenAPI specs, excluded there) apply; it is not
# rewritten by this check, and moved line numbers do not fail it.
#
#   scripts/check_secrets.sh            check (exit 1 and the list of findings to audit)
#   scripts/check_secrets.sh --update   rescan into .secrets.baseline, keeping the audit labels;
#                                       then label the new findings with
#                                       `.venv/bin/detect-secrets audit .secrets.baseline`
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=.secrets.baseline
bin=.venv/bin

files=()
while IFS= read -r -d '' f; do
  # Tracked but deleted in the work tree: nothing to scan. The baseline scans no copy of itself.
  if [ -f "$f" ] && [ "$f" != "$baseline" ]; then files+=("$f"); fi
done < <(git ls-files -z --cached --others --exclude-standard)

# `scan --baseline` rescans with the baseline's plugins and filters and carries the audit label
# (is_secret) of every finding that is still there over to the new results.
if [ "${1:-}" = "--update" ]; then
  "$bin/detect-secrets" scan --baseline "$baseline" "${files[@]}"
  echo "check_secrets: $baseline rescanned; audit what is new: $bin/detect-secrets audit $baseline"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$baseline" "$work/baseline"
"$bin/detect-secrets" scan --baseline "$work/baseline" "${files[@]}"

# Every finding must carry an audit label, and every label must say "not a secret".
"$bin/python" - "$work/baseline" "$baseline" "${#files[@]}" <<'EOF'
import json
import sys

path, baseline, scanned = sys.argv[1:]
results = json.load(open(path))["results"]
bad = [
    (filename, finding)
    for filename, findings in sorted(results.items())
    for finding in findings
    if finding.get("is_secret") is not False
]
if not bad:
    print(f"check_secrets: {scanned} files, every finding audited as not a secret")
    sys.exit(0)
print(f"check_secrets: findings not audited in {baseline} (or audited as real):", file=sys.stderr)
for filename, finding in bad:
    state = "audited as REAL" if finding.get("is_secret") else "not audited"
    print(f"  {filename}:{finding['line_number']}: {finding['type']} ({state})", file=sys.stderr)
print(
    "A real secret: remove it from the file (and rotate it). A deliberate fake: run\n"
    f"scripts/check_secrets.sh --update, then .venv/bin/detect-secrets audit {baseline}",
    file=sys.stderr,
)
sys.exit(1)
EOF
