"""The least-privilege promises of an Airlock CloudFormation template (roles,
secrets, network, the ALB's routes, the host's listeners and sizing), checked
from the template itself and the operator policy baked into the host image
(config/policy.toml beside this file): `python check.py TEMPLATE`. Exit 0 if
all hold; otherwise 1, with one line per broken promise."""

import json
import re
import sys
import tomllib
from pathlib import Path

from cfnlint.decode import decode

HOST_ACTIONS = {
    "bedrock-agentcore:GetWorkloadAccessTokenForUserId",
    "bedrock-agentcore:GetWorkloadAccessTokenForJWT",
    "bedrock-agentcore:GetResourceOauth2Token",
    "bedrock-agentcore:GetResourceApiKey",
    "bedrock-agentcore:CreateWorkloadIdentity",
    "bedrock-agentcore:GetWorkloadIdentity",
    "bedrock-agentcore:UpdateWorkloadIdentity",
    "secretsmanager:GetSecretValue",
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:ListBucket",
    "kms:Decrypt",
    "kms:GenerateDataKey",
}
BINDING_ACTIONS = {"bedrock-agentcore:CompleteResourceTokenAuth"}
HOST_EXECUTION_ACTIONS = {"secretsmanager:GetSecretValue"}

# The secrets each role may read (secretsmanager:GetSecretValue), by the
# parameter or resource naming them; every other role reads none. The vault
# reads the provider's secret as the host's caller; ECS reads the facade's two
# with the host's execution role when a task starts.
SECRET_READERS = {
    "HostTaskRole": {"ProviderClientSecretArn"},
    "HostExecutionRole": {"OAuthSigningSecret", "OAuthIdpClientSecretArn", "AuditSigningKeyArn"},
    "ExecutionRole": {"AuditSigningKeyArn"},
}
# Every service's audit checkpoints are signed, with a key ECS hands it.
SIGNED_TRAILS = {"HostTaskDefinition": "host", "BindingTaskDefinition": "binding"}

# The facade's secrets: into the host container only through ECS Secrets.
FACADE_SECRETS = ("AIRLOCK_OAUTH_SECRETS", "AIRLOCK_OAUTH_IDP_CLIENT_SECRET")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PRIVATE|TOKEN|CREDENTIAL|_KEY$")

# The host's two listeners, each behind its own target group, and what each
# accepts. The ALB sets x-amzn-oidc-data itself only on rules that sign users in
# (authenticate-oidc); on the others it passes on whatever the client sent. So
# the listener those reach must not take that header: bearer tokens only.
HOST_GROUP, MCP_GROUP = "HostTargetGroup", "McpTargetGroup"
LISTENERS = {
    # target group: (listen variable, its default, the port, what it must accept exactly)
    HOST_GROUP: ("AIRLOCK_LISTEN", "0.0.0.0:8080", 8080, ("AIRLOCK_HTTP_ACCEPT", "alb")),
    # The image sets AIRLOCK_MCP_LISTEN=off (deploy/host.Dockerfile): no default here.
    MCP_GROUP: ("AIRLOCK_MCP_LISTEN", None, 8000, ("AIRLOCK_MCP_ACCEPT", "bearer")),
}

# Paths the ALB signs users in on (authenticate-oidc) before forwarding them.
SIGNED_IN = {
    "/oauth2/session-binding": "BindingTargetGroup",
    "/invocations": HOST_GROUP,
}
# Paths forwarded to the host's MCP listener with no ALB sign-in: MCP clients,
# which cannot follow its redirect, send bearer tokens the host checks itself,
# and find how to get one at the metadata and the facade.
BEARER = [
    "/mcp",
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-authorization-server",
    "/oauth/authorize",
    "/oauth/consent",
    "/oauth/callback",
    "/oauth/token",
    "/oauth/register",
    "/oauth/jwks",
]
SIGN_IN = ("authenticate-oidc", "authenticate-cognito")


def as_list(value):
    return value if isinstance(value, list) else [value]


def text_of(value):
    """A resource as text: a literal, or the template string of a Sub."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return None  # Ref / GetAtt: one named resource


def ref_name(value):
    """The resource or parameter a Ref or GetAtt names, else the text."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            att = value["Fn::GetAtt"]
            return att[0] if isinstance(att, list) else att.split(".")[0]
    return text_of(value) or json.dumps(value)


def statements(role):
    for policy in role.get("Properties", {}).get("Policies", []):
        yield from as_list(policy["PolicyDocument"]["Statement"])


def check_role(name, role, allowed, problems):
    actions = set()
    for st in statements(role):
        if st.get("Effect") != "Allow":
            continue
        for action in as_list(st.get("Action", [])):
            actions.add(action)
            if "*" in action:
                problems.append(f"{name}: action `{action}` is a wildcard")
        if "NotAction" in st or "NotResource" in st:
            problems.append(f"{name}: statement {st.get('Sid')} uses NotAction/NotResource")
        for resource in as_list(st.get("Resource", [])):
            text = text_of(resource)
            if text is None:
                continue
            if text == "*":
                problems.append(f"{name}: statement {st.get('Sid')} allows Resource `*`")
            elif "*" in text:
                # Allowed: one trailing wildcard after a named prefix
                # (`.../workload-identity/airlock.*`, `bucket/tools/*`).
                head = text.split(":", 5) if text.startswith("arn:") else []
                before = text[:-1].rstrip("/")
                if (
                    not text.endswith("*")
                    or text.count("*") > 1
                    or any("*" in part for part in head[:5])
                    or not before
                    or before[-1] in ":/"
                    or before.endswith("::")
                ):
                    problems.append(f"{name}: resource `{text}` is a wildcard over more than a name prefix")
    extra = actions - allowed
    if extra:
        problems.append(f"{name}: actions beyond what it uses: {sorted(extra)}")
    return actions


def reads_secrets(action):
    return re.fullmatch(action.replace("*", ".*"), "secretsmanager:GetSecretValue", re.I) is not None


def check_secret_readers(res, problems):
    """Who may read which secret: exactly the SECRET_READERS."""
    readable = {}
    for rname, r in res.items():
        if r["Type"] != "AWS::IAM::Role":
            continue
        allowed = SECRET_READERS.get(rname, set())
        can = readable.setdefault(rname, set())
        for st in statements(r):
            if st.get("Effect") != "Allow" or not any(reads_secrets(a) for a in as_list(st.get("Action", []))):
                continue
            for resource in as_list(st.get("Resource", [])):
                name = ref_name(resource)
                can.add(name)
                if name not in allowed:
                    problems.append(
                        f"{rname}: may read secret `{name}` (GetSecretValue), beyond the secrets it needs: "
                        f"{sorted(allowed) or 'none'}"
                    )
    return readable


def check_container_secrets(res, readable, problems):
    """The facade's secrets reach the host only as ECS Secrets, which its
    execution role can read; no environment value looks like a secret."""
    for rname, r in res.items():
        if r["Type"] != "AWS::ECS::TaskDefinition":
            continue
        props = r["Properties"]
        execution = ref_name(props.get("ExecutionRoleArn", {}))
        for c in props["ContainerDefinitions"]:
            where = f"{rname}/{c['Name']}"
            for env in c.get("Environment", []):
                name, value = env.get("Name", ""), json.dumps(env.get("Value", ""))
                if name in FACADE_SECRETS or SECRET_NAME.search(name) or "{{resolve:" in value:
                    problems.append(
                        f"{where}: environment variable {name} holds a secret in the task definition; "
                        "pass it in Secrets (ValueFrom)"
                    )
            for secret in c.get("Secrets", []):
                source = ref_name(secret.get("ValueFrom", ""))
                if source not in readable.get(execution, set()):
                    problems.append(
                        f"{where}: its execution role {execution} cannot read `{source}` "
                        f"({secret.get('Name')}): ECS reads Secrets with it"
                    )
        if rname in SIGNED_TRAILS:
            container = next((c for c in props["ContainerDefinitions"] if c["Name"] == SIGNED_TRAILS[rname]), {})
            if not any(s.get("Name") == "AIRLOCK_AUDIT_SIGNING_KEY" for s in container.get("Secrets", [])):
                problems.append(
                    f"{rname}/{SIGNED_TRAILS[rname]}: AIRLOCK_AUDIT_SIGNING_KEY is not given (Secrets): "
                    "its audit trail is unsigned"
                )
        if rname == "HostTaskDefinition":
            host = next((c for c in props["ContainerDefinitions"] if c["Name"] == "host"), {})
            given = {s.get("Name"): s.get("ValueFrom") for s in host.get("Secrets", [])}
            for name in FACADE_SECRETS:
                if not given.get(name):
                    problems.append(f"{rname}/host: {name} does not come from Secrets Manager (Secrets, ValueFrom)")
            generated = res.get(ref_name(given.get("AIRLOCK_OAUTH_SECRETS", "")), {})
            if generated.get("Type") == "AWS::SecretsManager::Secret":
                gname = ref_name(given["AIRLOCK_OAUTH_SECRETS"])
                gprops = generated.get("Properties", {})
                spec = gprops.get("GenerateSecretString")
                if "SecretString" in gprops or spec is None:
                    problems.append(f"{gname}: its value is in the template, not generated (GenerateSecretString)")
                else:
                    if int(spec.get("PasswordLength", 32)) < 32:
                        problems.append(f"{gname}: generates fewer than 32 characters; the facade needs 32 bytes at least")
                    if spec.get("ExcludePunctuation") is not True and "," not in spec.get("ExcludeCharacters", ""):
                        problems.append(f"{gname}: may contain a comma, which splits AIRLOCK_OAUTH_SECRETS")


def path_matches(pattern, path):
    """An ALB path pattern: case-sensitive, `*` any characters, `?` one."""
    rx = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(rx, path) is not None


def rules_taking(res, path):
    """The listener rules that may take a request for `path`, in the order the
    ALB tries them: up to the first whose only condition is its path."""
    rules = []
    for rname, r in res.items():
        if r["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule":
            try:
                rules.append((int(r["Properties"]["Priority"]), rname, r["Properties"]))
            except (KeyError, TypeError, ValueError):
                rules.append((0, rname, r["Properties"]))
    taking = []
    for _, rname, props in sorted(rules):
        conditions = props.get("Conditions", [])
        patterns = [
            v
            for c in conditions
            if c.get("Field") == "path-pattern"
            for v in c.get("PathPatternConfig", {}).get("Values", c.get("Values", []))
        ]
        has_path = any(c.get("Field") == "path-pattern" for c in conditions)
        if has_path and not any(isinstance(v, str) and path_matches(v, path) for v in patterns):
            continue
        taking.append((rname, props))
        if all(c.get("Field") == "path-pattern" for c in conditions):
            break
    return taking


def ordered_actions(props):
    acts = list(enumerate(props.get("Actions", [])))
    return [a for _, a in sorted(acts, key=lambda ia: (ia[1].get("Order", ia[0] + 1), ia[0]))]


def forwards_to(actions):
    for a in actions:
        if a.get("Type") == "forward":
            if "TargetGroupArn" in a:
                return {ref_name(a["TargetGroupArn"])}
            groups = a.get("ForwardConfig", {}).get("TargetGroups", [])
            return {ref_name(g.get("TargetGroupArn")) for g in groups}
    return None


def check_routes(res, problems):
    """Which paths the ALB signs users in on, and which it forwards to the
    host with no sign-in (MCP clients)."""
    for path, group in SIGNED_IN.items():
        taking = rules_taking(res, path)
        if not taking:
            problems.append(f"{path}: no rule forwards it to {group}")
        for rname, props in taking:
            actions = ordered_actions(props)
            if not actions or actions[0].get("Type") not in SIGN_IN:
                problems.append(f"{path}: {rname} does not sign users in (authenticate-oidc) before forwarding")
            targets = forwards_to(actions)
            if targets != {group}:
                problems.append(f"{path}: {rname} forwards it to {sorted(targets or [])}, not {group}")
    for path in BEARER:
        taking = rules_taking(res, path)
        if not taking:
            problems.append(
                f"{path}: no rule forwards it to the host's MCP listener ({MCP_GROUP}); "
                "MCP clients need it without a sign-in"
            )
        for rname, props in taking:
            actions = ordered_actions(props)
            signs = [a["Type"] for a in actions if a.get("Type") in SIGN_IN]
            if signs:
                problems.append(
                    f"{path}: {rname} signs users in ({signs[0]}) before forwarding: a redirect no MCP client can follow"
                )
            targets = forwards_to(actions)
            if targets != {MCP_GROUP}:
                problems.append(
                    f"{path}: {rname} forwards it to {sorted(targets or [])}, not {MCP_GROUP} "
                    "(the MCP listener, port 8000, bearer tokens only)"
                )
    # Whatever reaches the listener that takes the ALB's header, any path,
    # any rule, the listeners' default actions: signed in by the ALB first.
    reaching = [
        (rname, props.get("Actions", []))
        for rname, r in res.items()
        if r["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule"
        for props in [r.get("Properties", {})]
    ] + [
        (f"{rname} (default action)", r.get("Properties", {}).get("DefaultActions", []))
        for rname, r in res.items()
        if r["Type"] == "AWS::ElasticLoadBalancingV2::Listener"
    ]
    for rname, actions in reaching:
        actions = ordered_actions({"Actions": actions})
        if HOST_GROUP in (forwards_to(actions) or set()) and (not actions or actions[0].get("Type") not in SIGN_IN):
            problems.append(
                f"{rname}: forwards to {HOST_GROUP} with no authenticate-oidc: the listener there takes "
                "x-amzn-oidc-data, which the ALB passes on from the client without a sign-in"
            )


def environment(container):
    return {e.get("Name"): e.get("Value") for e in container.get("Environment", [])}


def port_of(address):
    """The port of `HOST:PORT`, else None (`off`, a reference, nothing)."""
    if isinstance(address, str) and re.fullmatch(r"[^:]+:\d+|\[[0-9a-fA-F:]+\]:\d+", address):
        return int(address.rsplit(":", 1)[1])
    return None


def check_listeners(res, problems):
    """The host's two listeners: where each is, what each accepts exactly, and
    which target group reaches which (HostService's LoadBalancers)."""
    task = res.get("HostTaskDefinition", {}).get("Properties", {})
    host = next((c for c in task.get("ContainerDefinitions", []) if c.get("Name") == "host"), None)
    if host is None:
        problems.append("HostTaskDefinition: no container named host")
        return
    env = environment(host)
    mapped = {}
    for lb in res.get("HostService", {}).get("Properties", {}).get("LoadBalancers", []):
        mapped.setdefault(ref_name(lb.get("TargetGroupArn")), set()).add(lb.get("ContainerPort"))
    published = {m.get("ContainerPort") for m in host.get("PortMappings", [])}
    for group, (listen, default, port, (accept, exactly)) in LISTENERS.items():
        where = f"HostTaskDefinition/host: {listen}"
        address = env.get(listen, default)
        if address is None:
            problems.append(f"{where} is not set: the image turns that listener off; set it to 0.0.0.0:{port}")
        elif port_of(address) != port:
            problems.append(f"{where} is `{address}`, not port {port}, where {group} sends")
        given = env.get(accept)
        if given != exactly:
            problems.append(
                f"HostTaskDefinition/host: {accept} is `{given if given is not None else '(unset: every identity configured)'}`, "
                f"not exactly `{exactly}`: "
                + (
                    "a listener reached without authenticate-oidc must not take the ALB's header"
                    if exactly == "bearer"
                    else "the listener the ALB signs users in for takes its signed header only"
                )
            )
        if group not in res:
            problems.append(f"{group}: missing")
        elif str(res[group].get("Properties", {}).get("Port")) != str(port):
            problems.append(f"{group}: its port is {res[group]['Properties'].get('Port')}, not {port}")
        if mapped.get(group) != {port}:
            problems.append(
                f"HostService: {group} reaches the host's container port(s) {sorted(mapped.get(group, []))}, "
                f"not {port} ({listen})"
            )
        if port not in published:
            problems.append(f"HostTaskDefinition/host: container port {port} is not mapped (PortMappings)")


# Sizing: each call slot may take the operator policy's [limits] memory_mib, and
# the host itself (its compiled tools cache, the runtime) HOST_OVERHEAD_MIB.
POLICY = Path(__file__).resolve().parent / "config" / "policy.toml"
POLICY_IN_IMAGE = "/etc/airlock/policy.toml"
HOST_OVERHEAD_MIB = 512
DEFAULT_MAX_CONCURRENT_CALLS = 64  # host/server/src/config.rs, ServeLimits::default
DEFAULT_MEMORY_MIB = 64  # host/policy/src/limits.rs, Limits::default


def count(value, gb=False):
    """An integer written as a number or a string; with gb, `4 GB` too (Fargate
    memory), in MiB. Else None."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(GB)?\s*" if gb else r"\s*(\d+)()\s*", str(value), re.I)
    return None if m is None else int(m.group(1)) * (1024 if m.group(2) else 1)


def number(value, params, worst, what, gb=False):
    """(the value as deployed by default, the worst value a deploy may give it)
    of a literal or a Ref to a parameter; worst is max or min. Else why not."""
    if count(value, gb) is not None:
        return count(value, gb), count(value, gb)
    if isinstance(value, dict) and list(value) == ["Ref"] and value["Ref"] in params:
        name = value["Ref"]
        p = params[name]
        default = count(p.get("Default"), gb)
        if default is None:
            return f"{what} is the parameter {name}, which has no numeric Default"
        if "AllowedValues" in p:
            allowed = [count(v, gb) for v in p["AllowedValues"]]
            if None in allowed:
                return f"{what} is the parameter {name}, whose AllowedValues are not all numbers"
            return default, worst(allowed)
        bound_name = "MaxValue" if worst is max else "MinValue"
        bound = count(p.get(bound_name))
        if bound is None:
            return f"{what} is the parameter {name}, which has no {bound_name}: a deploy could give it any value"
        return default, bound
    return (
        f"{what} is `{json.dumps(value)}`, which this check cannot evaluate: make it a literal, "
        "or a Ref to a parameter with a numeric Default and bounds"
    )


def check_sizing(res, params, problems, policy_path=POLICY):
    """Calls at once x memory_mib + the host's own overhead fit the host task's memory."""
    where = "HostTaskDefinition"
    task = res.get(where, {}).get("Properties", {})
    host = next((c for c in task.get("ContainerDefinitions", []) if c.get("Name") == "host"), {})
    env = environment(host)
    try:
        shown = policy_path.relative_to(Path(__file__).resolve().parent.parent)
    except ValueError:
        shown = policy_path

    memory = number(task.get("Memory"), params, min, f"{where}: Memory", gb=True)
    if "Memory" in host:  # a container's hard limit below the task's
        limit = number(host["Memory"], params, min, f"{where}/host: Memory")
        if isinstance(memory, tuple) and isinstance(limit, tuple):
            memory = (min(memory[0], limit[0]), min(memory[1], limit[1]))
        elif isinstance(limit, str):
            memory = limit
    if "AIRLOCK_MAX_CONCURRENT_CALLS" in env:
        slots = number(
            env["AIRLOCK_MAX_CONCURRENT_CALLS"], params, max, f"{where}/host: AIRLOCK_MAX_CONCURRENT_CALLS"
        )
        unset = ""
    elif "AIRLOCK_SERVE_CONFIG" in env:
        slots = f"{where}/host: AIRLOCK_MAX_CONCURRENT_CALLS is unset and a settings file (AIRLOCK_SERVE_CONFIG) may set it"
    else:
        slots = (DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_MAX_CONCURRENT_CALLS)
        unset = f" (AIRLOCK_MAX_CONCURRENT_CALLS unset: the host's default {DEFAULT_MAX_CONCURRENT_CALLS})"
    if env.get("AIRLOCK_POLICY", POLICY_IN_IMAGE) != POLICY_IN_IMAGE:
        mib = (
            f"{where}/host: AIRLOCK_POLICY is `{text_of(env['AIRLOCK_POLICY']) or json.dumps(env['AIRLOCK_POLICY'])}`, "
            f"not the image's {POLICY_IN_IMAGE} (deploy/config/policy.toml): its memory_mib is unknown"
        )
    else:
        try:
            with open(policy_path, "rb") as f:
                limit = tomllib.load(f).get("limits", {}).get("memory_mib", DEFAULT_MEMORY_MIB)
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                mib = f"{shown}: [limits] memory_mib is `{limit}`, not a positive integer"
            else:
                mib = limit
        except (OSError, AttributeError, tomllib.TOMLDecodeError) as e:
            mib = f"{shown}: cannot read the operator policy's [limits] memory_mib: {e}"

    unknown = [v for v in (memory, slots, mib) if isinstance(v, str)]
    for reason in unknown:
        problems.append(f"{reason}; the host's memory cannot be sized, so it is refused")
    if unknown:
        return
    # By the parameters' defaults, then at the bounds a deploy may choose; the first that does not fit.
    for calls, task_mib, how in (
        (slots[0], memory[0], "by default"),
        (slots[1], memory[1], "with the most calls and the least memory the parameters allow at deploy"),
    ):
        need = calls * mib + HOST_OVERHEAD_MIB
        if need > task_mib:
            fits = max((task_mib - HOST_OVERHEAD_MIB) // mib, 0)
            problems.append(
                f"{where}: {calls} calls at once{unset} x {mib} MiB ([limits] memory_mib, {shown}) "
                f"+ {HOST_OVERHEAD_MIB} MiB for the host = {need} MiB, more than the task's {task_mib} MiB "
                f"({how}): set AIRLOCK_MAX_CONCURRENT_CALLS (its parameter's Default and MaxValue) to {fits} "
                "or less, lower memory_mib, or raise the task's Memory"
            )
            break


def check_audit_archive(res, problems):
    """The audit archive keeps what reaches it (S3 Object Lock for the
    retention period), gets the records as written (Firehose decompresses and
    extracts CloudWatch Logs' messages), and no task role can touch it."""
    bucket = res.get("AuditBucket", {}).get("Properties", {})
    lock = bucket.get("ObjectLockConfiguration", {})
    retention = lock.get("Rule", {}).get("DefaultRetention", {})
    if bucket.get("ObjectLockEnabled") is not True or lock.get("ObjectLockEnabled") != "Enabled":
        problems.append("AuditBucket: no S3 Object Lock: whoever can delete objects can drop a task's chain")
    elif not retention.get("Mode") or not (retention.get("Days") or retention.get("Years")):
        problems.append("AuditBucket: Object Lock has no default retention (Mode and Days)")
    stream = res.get("AuditStream", {}).get("Properties", {}).get("ExtendedS3DestinationConfiguration", {})
    processing = stream.get("ProcessingConfiguration", {})
    processors = {p.get("Type"): {q.get("ParameterName"): str(q.get("ParameterValue")) for q in p.get("Parameters", [])}
                  for p in processing.get("Processors", [])} if processing.get("Enabled") else {}
    if "Decompression" not in processors or processors.get("CloudWatchLogProcessing", {}).get("DataMessageExtraction") != "true":
        problems.append("AuditStream: does not decompress and extract CloudWatch Logs' messages: the archive holds envelopes, not records")
    for rname, r in res.items():
        if r["Type"] == "AWS::IAM::Role" and rname != "AuditDeliveryRole":
            for st in statements(r):
                if st.get("Effect") == "Allow" and "AuditBucket" in json.dumps(st.get("Resource")):
                    problems.append(f"{rname}: may act on the audit archive (AuditBucket)")


def main(path):
    template, matches = decode(path)
    if matches:
        print(f"{path}: does not parse: {matches}")
        return 1
    res = template["Resources"]
    problems = []

    check_role("HostTaskRole", res["HostTaskRole"], HOST_ACTIONS, problems)
    binding = check_role("BindingTaskRole", res["BindingTaskRole"], BINDING_ACTIONS, problems)
    if binding != BINDING_ACTIONS:
        problems.append(f"BindingTaskRole: allows {sorted(binding)}, not exactly CompleteResourceTokenAuth")
    for name, allowed in (("HostExecutionRole", HOST_EXECUTION_ACTIONS), ("ExecutionRole", HOST_EXECUTION_ACTIONS)):
        if name in res:
            check_role(name, res[name], allowed, problems)
        else:
            problems.append(f"{name}: missing")
    readable = check_secret_readers(res, problems)
    check_container_secrets(res, readable, problems)
    check_routes(res, problems)
    check_listeners(res, problems)
    check_sizing(res, template.get("Parameters", {}), problems)
    check_audit_archive(res, problems)

    # The tasks take traffic from the ALB's security group only.
    tasks = {"HostSecurityGroup", "BindingSecurityGroup"}
    for name in tasks:
        if res[name]["Properties"].get("SecurityGroupIngress"):
            problems.append(f"{name}: has inline ingress rules")
    for rname, r in res.items():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::EC2::SecurityGroupIngress" and props.get("GroupId", {}).get("Ref") in tasks:
            source = props.get("SourceSecurityGroupId", {})
            if not (isinstance(source, dict) and source.get("Ref") == "AlbSecurityGroup"):
                problems.append(f"{rname}: lets in traffic from something other than the ALB's security group")
            if "CidrIp" in props or "CidrIpv6" in props or "SourcePrefixListId" in props:
                problems.append(f"{rname}: lets in an address range")

    for rname, r in res.items():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::ECS::Service":
            net = props["NetworkConfiguration"]["AwsvpcConfiguration"]
            if net.get("AssignPublicIp") != "DISABLED":
                problems.append(f"{rname}: tasks get public addresses")
        if r["Type"] == "AWS::ECS::TaskDefinition":
            for c in props["ContainerDefinitions"]:
                if c.get("ReadonlyRootFilesystem") is not True:
                    problems.append(f"{rname}/{c['Name']}: root filesystem is writable")
                if str(c.get("User", "0")).split(":")[0] in ("0", "root"):
                    problems.append(f"{rname}/{c['Name']}: runs as root")

    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
