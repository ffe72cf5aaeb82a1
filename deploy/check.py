"""The least-privilege promises of an Airlock CloudFormation template, checked
from the template itself: `python check.py TEMPLATE`. Exit 0 if all hold;
otherwise 1, with one line per broken promise."""

import sys

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
        if r["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule" and rname in ("AgentRule", "BindingRule"):
            first = sorted(props["Actions"], key=lambda a: a.get("Order", 0))[0]
            if first["Type"] != "authenticate-oidc":
                problems.append(f"{rname}: does not sign users in before forwarding")

    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
