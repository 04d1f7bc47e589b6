#!/usr/bin/env bash
# deploy/check.sh: static checks of everything in deploy/, run by `make test`.
#
#   promtool check rules / test rules   alerts.yml, alerts_test.yml
#   every alert has a firing and a quiet test case
#   every Grafana panel query parses as PromQL (via promtool)
#   JSON syntax of the dashboard and the JetStream stream definition
#   systemd-analyze verify of the unit (ExecStart pointed at /bin/true, since
#     the real binary is not installed here) and its hardening directives
#   Kubernetes manifests: YAML syntax and the settings the brief requires
#   Dockerfile: distroless nonroot, port, entrypoint
#
# Installs what is missing from Debian (promtool from `prometheus`, which is
# the only Debian package shipping it; systemd-analyze from `systemd`; jq;
# python3-yaml). Idempotent; fast once the tools are present; exits non-zero
# on the first failure with the reason.
set -euo pipefail

cd "$(dirname "$0")"
DEPLOY=$PWD
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

fail() { echo "deploy/check.sh: FAIL: $*" >&2; exit 1; }
ok() { echo "deploy/check.sh: ok: $*"; }

# --- tools -------------------------------------------------------------------
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v jq >/dev/null || missing+=(jq)
command -v python3 >/dev/null && python3 -c 'import yaml' 2>/dev/null || missing+=(python3 python3-yaml)
if ((${#missing[@]})); then
	[[ $(id -u) == 0 ]] || fail "missing packages ${missing[*]} and not root to install them"
	echo "deploy/check.sh: installing ${missing[*]}"
	# Installing `prometheus` would start a Prometheus server on a machine
	# running systemd; we only want promtool. policy-rc.d tells the
	# maintainer scripts not to start services (unless one is already set).
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		trap 'rm -rf "$TMP"; rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || fail "apt-get update"
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$TMP/apt.log" 2>&1 ||
		{ cat "$TMP/apt.log" >&2; fail "apt-get install ${missing[*]}"; }
fi

# --- Prometheus rules --------------------------------------------------------
promtool check rules prometheus/alerts.yml >"$TMP/out" 2>&1 || { cat "$TMP/out" >&2; fail "promtool check rules"; }
(cd prometheus && promtool test rules alerts_test.yml) >"$TMP/out" 2>&1 || { cat "$TMP/out" >&2; fail "promtool test rules"; }
ok "alert rules parse and their unit tests pass"

# Every alert needs a case where it fires (exp_alerts with items) and one
# where it stays quiet (exp_alerts: []).
alerts=$(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' prometheus/alerts.yml | sort -u)
cases=$(awk '
	/alertname:/ { name = $2; next }
	/exp_alerts: *\[\]/ { if (name != "") print name, "quiet"; name = ""; next }
	/exp_alerts:/ { if (name != "") print name, "firing"; name = ""; next }
' prometheus/alerts_test.yml | sort -u)
for a in $alerts; do
	grep -qx "$a firing" <<<"$cases" || fail "alerts_test.yml has no firing case for $a"
	grep -qx "$a quiet" <<<"$cases" || fail "alerts_test.yml has no quiet case for $a"
done
ok "$(wc -w <<<"$alerts") alerts each have firing and quiet test cases"

# --- Grafana dashboard -------------------------------------------------------
jq -e '.uid and .title and (.panels | length > 0)' grafana/dialsync.json >/dev/null ||
	fail "grafana/dialsync.json: invalid JSON or no uid/title/panels"
dups=$(jq -r '[.panels[].id] | group_by(.) | map(select(length > 1)[0]) | .[]' grafana/dialsync.json)
[[ -z $dups ]] || fail "grafana/dialsync.json: duplicate panel ids: $dups"
# Parse every query with promtool: wrap them as recording rules after
# replacing Grafana's template variables with values PromQL accepts.
{
	echo "groups:"
	echo "  - name: dashboard"
	echo "    rules:"
	jq -r '(.panels[].targets[]?.expr), (.annotations.list[]?.expr // empty)' grafana/dialsync.json |
		sed -e 's/\$__rate_interval/5m/g' -e 's/\$__interval/1m/g' -e 's/\$job/.*/g' -e 's/\$instance/.*/g' \
			-e "s/'/''/g" |
		awk '{ printf "      - record: dashboard:q%d\n        expr: \047%s\047\n", NR, $0 }'
} >"$TMP/dashboard_rules.yml"
promtool check rules "$TMP/dashboard_rules.yml" >"$TMP/out" 2>&1 || { cat "$TMP/out" >&2; fail "grafana/dialsync.json: a panel query is not valid PromQL"; }
ok "dashboard JSON valid, $(grep -c 'record:' "$TMP/dashboard_rules.yml") queries parse"

# --- NATS stream -------------------------------------------------------------
jq -e '.name == "DIALSYNC" and .subjects == ["dialsync.>"] and .storage == "file" and .discard == "old"
	and .duplicate_window == 120000000000 and .max_age == 259200000000000' nats/stream.json >/dev/null ||
	fail "nats/stream.json: invalid JSON or wrong name/subjects/storage/discard/duplicate_window/max_age"
ok "stream definition"

# --- systemd -----------------------------------------------------------------
unit=systemd/dialsync.service
grep -q '^ExecStart=/usr/local/bin/dialsync run --config /etc/dialsync/config.toml$' "$unit" || fail "$unit: ExecStart changed"
for d in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes DynamicUser=yes \
	'CapabilityBoundingSet=' 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' SystemCallFilter=@system-service \
	Restart=on-failure 'RestartSec=' 'TimeoutStopSec=' 'EnvironmentFile='; do
	grep -q "^$d" "$unit" || fail "$unit: missing $d"
done
# verify needs the ExecStart binary to exist; check a copy that runs /bin/true.
mkdir -p "$TMP/unit"
sed 's#^ExecStart=/usr/local/bin/dialsync #ExecStart=/bin/true #' "$unit" >"$TMP/unit/dialsync.service"
# verify returns 0 on some warnings (an unknown key is only "ignoring"), so
# any output counts as a failure too.
if ! systemd-analyze verify "$TMP/unit/dialsync.service" >"$TMP/out" 2>&1 || [[ -s $TMP/out ]]; then
	cat "$TMP/out" >&2
	fail "systemd-analyze verify $unit"
fi
ok "systemd unit verifies"

# --- Kubernetes --------------------------------------------------------------
python3 - "$DEPLOY/kubernetes" <<'PY' || fail "kubernetes manifests"
import os, sys, yaml
d = sys.argv[1]
kust = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
docs = {}
for f in kust["resources"]:
    for doc in yaml.safe_load_all(open(os.path.join(d, f))):
        docs[doc["kind"]] = doc
missing = {"Deployment", "Secret", "ConfigMap", "Service", "PodDisruptionBudget"} - docs.keys()
assert not missing, f"kustomization lacks {missing}"
dep = docs["Deployment"]["spec"]
assert dep["replicas"] == 2, "Deployment must run 2 replicas"
pod = dep["template"]["spec"]
assert pod["securityContext"]["runAsNonRoot"] is True
assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
(c,) = pod["containers"]
sc = c["securityContext"]
assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
assert sc["capabilities"]["drop"] == ["ALL"]
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert c["ports"][0]["containerPort"] == 9120
env = {e["name"]: e for e in c["env"]}
assert env["DIALSYNC_HTTP_LISTEN"]["value"] == "0.0.0.0:9120", "pod must listen on 0.0.0.0:9120"
secret = docs["Secret"]
for k in ("DIALSYNC_SOURCE_PASSWORD", "DIALSYNC_POSTGRES_DSN", "DIALSYNC_REDIS_PASSWORD", "DIALSYNC_NATS_TOKEN"):
    ref = env[k]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and k in secret["stringData"], k
r = c["resources"]
assert r["limits"]["memory"] == "128Mi" and r["requests"] == {"cpu": "100m", "memory": "64Mi"}
cm = docs["ConfigMap"]
assert "config.toml" in cm["data"]
assert any(v.get("configMap", {}).get("name") == cm["metadata"]["name"] for v in pod["volumes"])
sel = docs["Service"]["spec"]["selector"]
labels = dep["template"]["metadata"]["labels"]
assert all(labels.get(k) == v for k, v in sel.items()), "Service selector does not match the pods"
assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
PY
ok "kubernetes manifests"

# --- Dockerfile --------------------------------------------------------------
df=docker/Dockerfile
for want in '^FROM golang:\$\{GO_VERSION\}' '^ARG GO_VERSION=1.26$' 'CGO_ENABLED=0' '-trimpath' '-X main.version=' \
	'^FROM gcr.io/distroless/static-debian12:nonroot$' '^USER nonroot' '^EXPOSE 9120$' \
	'^ENTRYPOINT \["/dialsync"\]$' '^CMD \["run", "--config", "/etc/dialsync/config.toml"\]$'; do
	grep -qE -- "$want" "$df" || fail "$df: no line matching $want"
done
ok "Dockerfile"

echo "deploy/check.sh: all deploy checks passed"
