#!/usr/bin/env bash
# The whole seed flow on this machine, for development only: oidc-provider as
# the corporate IdP and as the third-party provider, a resource server in place
# of api.github.com, the local identity service, the Session Binding Service
# behind alb-dev (the ALB stand-in), and `host serve` with its authorization
# server façade, wired together. Then connect any MCP client that signs in by
# itself (as it prints). Ctrl-C stops everything.
#
# Ports (override with the variables): IdP 9400, identity service 8790,
# binding service 8081, ALB 9000, host 8080 (/invocations, behind the ALB)
# and 8000 (MCP and the façade: clients sign in by OAuth).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
dir=${AIRLOCK_STACK_DIR:-$root/.airlock/stack}
p_idp=${AIRLOCK_STACK_IDP_PORT:-9400}
p_identity=${AIRLOCK_STACK_IDENTITY_PORT:-8790}
p_binding=${AIRLOCK_STACK_BINDING_PORT:-8081}
p_alb=${AIRLOCK_STACK_ALB_PORT:-9000}
p_http=${AIRLOCK_STACK_HTTP_PORT:-8080}
p_mcp=${AIRLOCK_STACK_MCP_PORT:-8000}

if [ -z "${AIRLOCK_STACK_NO_BUILD:-}" ]; then
  scripts/build-tools.sh >/dev/null
  scripts/setup-test-peers.sh
  cargo build --quiet --workspace --bins
fi
rm -rf "$dir" && mkdir -p "$dir"
secret() { python3 -c 'import secrets; print(secrets.token_hex(20))'; }
host_secret=$(secret) binding_secret=$(secret) client_secret=$(secret)
python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$dir/oauth-secrets"
printf %s "$client_secret" >"$dir/idp-client-secret"

pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

# Start NAME COMMAND...: stdout to NAME.out, stderr to NAME.log; wait for its first line.
start() {
  local name=$1
  shift
  "$@" >"$dir/$name.out" 2>"$dir/$name.log" &
  pids+=($!)
  for _ in $(seq 1200); do
    [ -s "$dir/$name.out" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "$name exited: see $dir/$name.log" >&2; cat "$dir/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$name did not start: see $dir/$name.log" >&2
  exit 1
}
field() { python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())[sys.argv[2]])' "$dir/$1.out" "$2"; }

idp="http://127.0.0.1:$p_idp"
alb="http://127.0.0.1:$p_alb"
binding_url="$alb/oauth2/session-binding"
alb_arn="arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/alb-dev/0000000000000000"

# 1. oidc-provider: the IdP (clients airlock-alb, airlock-agent) and the provider (client airlock).
OIDC_CONFIG=$(python3 - "$p_identity" "$p_alb" "$client_secret" "$p_mcp" <<'PY'
import json, sys
identity, alb, secret, mcp = sys.argv[1:]
print(json.dumps({
    "resource": "https://api.github.com",
    "scopes": ["repo", "read:user"],
    "deviceFlow": True,
    "clients": [
        {"client_id": "airlock", "client_secret": secret,
         "redirect_uris": [f"http://127.0.0.1:{identity}/identities/oauth2/callback/github"],
         "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
         "token_endpoint_auth_method": "client_secret_basic"},
        {"client_id": "airlock-alb", "client_secret": secret,
         "redirect_uris": [f"http://127.0.0.1:{alb}/oauth2/idpresponse"],
         "grant_types": ["authorization_code"], "response_types": ["code"],
         "token_endpoint_auth_method": "client_secret_basic"},
        {"client_id": "airlock-facade", "client_secret": secret,
         "redirect_uris": [f"http://127.0.0.1:{mcp}/oauth/callback"],
         "grant_types": ["authorization_code"], "response_types": ["code"],
         "token_endpoint_auth_method": "client_secret_basic"},
        {"client_id": "airlock-agent", "redirect_uris": [], "response_types": [],
         "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"],
         "token_endpoint_auth_method": "none"},
    ],
}))
PY
)
start idp env OIDC_CONFIG="$OIDC_CONFIG" PORT="$p_idp" node tests/oidc/server.mjs
discovery="$idp/.well-known/openid-configuration"

# 2. The API the tool calls (api.github.com, routed here by the operator policy).
start api "$target/debug/dev-resource-server" "$idp"
api=$(field api resource)

# 3. The local identity service, with a caller for the host and one for the binding service.
cat >"$dir/identity.toml" <<EOF
listen = "127.0.0.1:$p_identity"
data_dir = "$dir/identity"
[[caller]]
access_key_id = "AKIDSTACKHOST"
secret_access_key = "$host_secret"
operations = ["GetWorkloadAccessTokenForUserId", "GetWorkloadAccessTokenForJWT", "GetResourceOauth2Token",
              "CreateWorkloadIdentity", "GetWorkloadIdentity", "UpdateWorkloadIdentity"]
[[caller]]
access_key_id = "AKIDSTACKBINDING"
secret_access_key = "$binding_secret"
operations = ["CompleteResourceTokenAuth"]
[created_workloads]
[[created_workloads.jwt_issuer]]
discovery_url = "$discovery"
audiences = ["airlock-agent"]
[[oauth2_provider]]
name = "github"
client_id = "airlock"
client_secret = "$client_secret"
discovery_url = "$discovery"
extra_scopes = ["offline_access"]
authorization_params = { prompt = "consent" }
EOF
start identity "$target/debug/host" identity-service --config "$dir/identity.toml"

# 4. The Session Binding Service (it may only complete sessions).
cat >"$dir/binding.toml" <<EOF
listen = "127.0.0.1:$p_binding"
return_url = "$alb/"
sign_out_url = "$alb/oauth2/sign-out"
[alb]
signer_arn = "$alb_arn"
key_url = "$alb/keys"
issuer = "$idp"
[identity]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:$p_identity"
[audit]
sink = "$dir/binding-audit.jsonl"
EOF
start binding env AWS_ACCESS_KEY_ID=AKIDSTACKBINDING AWS_SECRET_ACCESS_KEY="$binding_secret" \
  AWS_REGION=us-east-1 "$target/debug/binding-service" --config "$dir/binding.toml"

# 5. The ALB stand-in: sign-in at the IdP, then the binding page and the host.
cat >"$dir/alb.toml" <<EOF
listen = "127.0.0.1:$p_alb"
signer_arn = "$alb_arn"
[idp]
discovery_url = "$discovery"
client_id = "airlock-alb"
client_secret = "$client_secret"
[[route]]
path_prefix = "/oauth2/session-binding"
target = "http://127.0.0.1:$p_binding"
[[route]]
path_prefix = "/"
target = "http://127.0.0.1:$p_http"
EOF
start alb "$target/debug/alb-dev" --config "$dir/alb.toml"

# 6. host serve: /invocations behind the ALB; MCP for clients that sign in by
#    OAuth at the façade (and agents that forward the IdP's tokens).
cat >"$dir/policy.toml" <<EOF
allowed_hosts = ["https://api.github.com", "https://api.frankfurter.dev"]
allow_private_addresses = true
dangerously_allow_https_to_http_routes = true
[[routes]]
from = "https://api.github.com"
to = "$api"
[providers.github]
scopes = ["repo"]
EOF
echo 'permit (principal, action, resource);' >"$dir/authorization.cedar"
# The Rust example tools (the interpreted ones take minutes to compile in a debug build).
mkdir -p "$dir/tools"
for tool in github-issues text-stats exchange-rates; do
  cp "tools/target/airlock/$tool.wasm" "$dir/tools/"
done
cat >"$dir/serve.toml" <<EOF
tools = ["$dir/tools"]
policy = "$dir/policy.toml"
metrics = "127.0.0.1:0"
public_url = "http://127.0.0.1:$p_mcp/mcp"
[http]
listen = "127.0.0.1:$p_http"
accept = ["alb"]
[mcp]
listen = "127.0.0.1:$p_mcp"
accept = ["bearer"]
[identity.alb]
signer_arn = "$alb_arn"
key_url = "$alb/keys"
issuer = "$idp"
[[identity.jwt_issuers]]
discovery_url = "$discovery"
audiences = ["airlock-agent"]
[authorization]
policies = "$dir/authorization.cedar"
[audit]
sink = "$dir/host-audit.jsonl"
[oauth]
issuer = "http://127.0.0.1:$p_mcp"
secrets_file = "$dir/oauth-secrets"
[oauth.idp]
discovery_url = "$discovery"
client_id = "airlock-facade"
client_secret_file = "$dir/idp-client-secret"
scopes = ["openid"]
EOF
start host env AWS_ACCESS_KEY_ID=AKIDSTACKHOST AWS_SECRET_ACCESS_KEY="$host_secret" \
  AWS_REGION=us-east-1 "$target/debug/host" serve --config "$dir/serve.toml" \
  --identity-endpoint "http://127.0.0.1:$p_identity" --workload airlock-agent --return-url "$binding_url"

python3 - "$idp" "$alb" "$p_mcp" "$dir" <<'PY'
import json, sys
idp, alb, mcp, d = sys.argv[1:]
print(json.dumps({"idp": idp, "alb": alb, "mcp": f"http://127.0.0.1:{mcp}/mcp", "dir": d}), flush=True)
PY
cat >&2 <<EOF
The stack is up (logs in $dir). Connect an MCP client that signs in by itself
to http://127.0.0.1:$p_mcp/mcp, e.g. the Python SDK's stock OAuth client:
  tests/mcp/.venv/bin/python tests/mcp/oauth_client.py http://127.0.0.1:$p_mcp/mcp 8765
It prints a sign-in URL (allow the client, sign in as anyone, e.g. alice),
then a consent URL for the tool: open both in a browser, and press Enter here
after the second. Ctrl-C here stops the stack.
EOF
wait
