//! The CloudFormation template in deploy/: cfn-lint (PyPI, pinned in
//! deploy/requirements.txt) finds nothing, and its least-privilege promises
//! hold (deploy/check.py), a check shown to fail on templates that break them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn tool(name: &str) -> PathBuf {
    let path = deploy().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-test-peers.sh",
        path.display()
    );
    path
}

fn check(template: &Path) -> Output {
    Command::new(tool("python"))
        .arg(deploy().join("check.py"))
        .arg(template)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn cfn_lint_finds_nothing_in_the_templates() {
    let out = Command::new(tool("cfn-lint"))
        .arg(deploy().join("airlock.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn the_least_privilege_promises_hold() {
    let out = check(&deploy().join("airlock.yaml"));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Each mutation breaks one promise; the check names it.
#[test]
fn the_check_names_each_broken_promise() {
    let template = std::fs::read_to_string(deploy().join("airlock.yaml")).unwrap();
    let complete = "                Action: bedrock-agentcore:CompleteResourceTokenAuth\n";
    let store = "                Action: [s3:GetObject, s3:PutObject, s3:DeleteObject]\n                Resource: !Sub \"${ToolStoreBucket.Arn}/tools/*\"\n";
    let ingress = "      FromPort: 8080\n      ToPort: 8081\n      SourceSecurityGroupId: !Ref AlbSecurityGroup\n";
    let mcp_rule = "      Priority: 40\n      Conditions:\n        - Field: path-pattern\n          PathPatternConfig: { Values: [/mcp, /mcp/*] }\n";
    let secrets = "            - { Name: AIRLOCK_OAUTH_IDP_CLIENT_ID, Value: !Ref OAuthIdpClientId }\n          # Read by ECS at task start (HostExecutionRole); never in the task definition.\n          Secrets:\n            - { Name: AIRLOCK_OAUTH_SECRETS, ValueFrom: !Ref OAuthSigningSecret }\n";
    let provider_secret = "                Action: secretsmanager:GetSecretValue\n                Resource: !Ref ProviderClientSecretArn\n";
    let mcp_forward = "          PathPatternConfig: { Values: [/mcp, /mcp/*] }\n      Actions:\n        - Type: forward\n          TargetGroupArn: !Ref McpTargetGroup\n";
    let calls = "            - { Name: AIRLOCK_MAX_CONCURRENT_CALLS, Value: !Ref HostMaxConcurrentCalls }\n";
    let cases: [(&str, &str, String, &str); 22] = [
        (
            "a second action for the binding service",
            complete,
            "                Action: [bedrock-agentcore:CompleteResourceTokenAuth, bedrock-agentcore:GetResourceOauth2Token]\n".into(),
            "BindingTaskRole: allows",
        ),
        (
            "a wildcard action",
            store,
            "                Action: s3:*\n                Resource: !Sub \"${ToolStoreBucket.Arn}/tools/*\"\n".into(),
            "action `s3:*` is a wildcard",
        ),
        (
            "a wildcard resource",
            store,
            "                Action: [s3:GetObject, s3:PutObject, s3:DeleteObject]\n                Resource: \"*\"\n".into(),
            "allows Resource `*`",
        ),
        (
            "a bucket-wide resource",
            store,
            "                Action: [s3:GetObject, s3:PutObject, s3:DeleteObject]\n                Resource: \"arn:aws:s3:::*\"\n".into(),
            "is a wildcard over more than a name prefix",
        ),
        (
            "tasks open to an address range",
            ingress,
            "      FromPort: 8080\n      ToPort: 8081\n      CidrIp: 0.0.0.0/0\n".into(),
            "HostIngressFromAlb: lets in",
        ),
        (
            "a writable root filesystem",
            "          Image: !Ref BindingImage\n          Essential: true\n          ReadonlyRootFilesystem: true\n",
            "          Image: !Ref BindingImage\n          Essential: true\n          ReadonlyRootFilesystem: false\n".into(),
            "root filesystem is writable",
        ),
        (
            "a public rule ahead of the binding page takes its path",
            mcp_rule,
            "      Priority: 15\n      Conditions:\n        - Field: path-pattern\n          PathPatternConfig: { Values: [/mcp, /mcp/*, /oauth2/*] }\n".into(),
            "/oauth2/session-binding: McpRule does not sign users in",
        ),
        (
            "the ALB signs MCP clients in again",
            "          PathPatternConfig: { Values: [/invocations] }\n",
            "          PathPatternConfig: { Values: [/mcp, /mcp/*, /invocations] }\n".into(),
            "/mcp: AgentRule signs users in (authenticate-oidc)",
        ),
        (
            "the authorization server's metadata not forwarded",
            "              - /.well-known/oauth-authorization-server\n",
            String::new(),
            "/.well-known/oauth-authorization-server: no rule forwards it to the host",
        ),
        (
            "the facade's secrets in the task definition",
            secrets,
            "            - { Name: AIRLOCK_OAUTH_IDP_CLIENT_ID, Value: !Ref OAuthIdpClientId }\n            - { Name: AIRLOCK_OAUTH_SECRETS, Value: !Sub \"{{resolve:secretsmanager:${OAuthSigningSecret}}}\" }\n          Secrets:\n".into(),
            "HostTaskDefinition/host: environment variable AIRLOCK_OAUTH_SECRETS",
        ),
        (
            "a short generated secret",
            "        PasswordLength: 64\n",
            "        PasswordLength: 16\n".into(),
            "OAuthSigningSecret: generates fewer than 32 characters",
        ),
        (
            "the host's own role reads the facade's secret",
            provider_secret,
            "                Action: secretsmanager:GetSecretValue\n                Resource: [!Ref ProviderClientSecretArn, !Ref OAuthSigningSecret]\n".into(),
            "HostTaskRole: may read secret `OAuthSigningSecret`",
        ),
        (
            "the execution role reads a secret the host does not need",
            "                  - !Ref OAuthIdpClientSecretArn\n",
            "                  - !Ref OidcClientSecretArn\n".into(),
            "HostExecutionRole: may read secret `OidcClientSecretArn`",
        ),
        (
            "the MCP listener, reached with no sign-in, takes the ALB's header too",
            "            - { Name: AIRLOCK_MCP_ACCEPT, Value: bearer }\n",
            "            - { Name: AIRLOCK_MCP_ACCEPT, Value: \"alb,bearer\" }\n".into(),
            "HostTaskDefinition/host: AIRLOCK_MCP_ACCEPT is `alb,bearer`, not exactly `bearer`",
        ),
        (
            "MCP clients forwarded to the listener that takes the ALB's header",
            mcp_forward,
            mcp_forward.replace("McpTargetGroup", "HostTargetGroup"),
            "/mcp: McpRule forwards it to ['HostTargetGroup'], not McpTargetGroup",
        ),
        (
            "the MCP listener left off, as the image has it",
            "            - { Name: AIRLOCK_MCP_LISTEN, Value: \"0.0.0.0:8000\" }\n",
            String::new(),
            "HostTaskDefinition/host: AIRLOCK_MCP_LISTEN is not set",
        ),
        (
            "a host task too small for its calls",
            "      Memory: \"4096\"\n",
            "      Memory: \"1024\"\n".into(),
            "24 calls at once x 64 MiB ([limits] memory_mib, deploy/config/policy.toml) + 512 MiB for the host = 2048 MiB, more than the task's 1024 MiB",
        ),
        (
            "the host's default number of calls",
            calls,
            String::new(),
            "64 calls at once (AIRLOCK_MAX_CONCURRENT_CALLS unset: the host's default 64) x 64 MiB",
        ),
        (
            "a number of calls a deploy may set to anything",
            "    MaxValue: 56\n",
            String::new(),
            "AIRLOCK_MAX_CONCURRENT_CALLS is the parameter HostMaxConcurrentCalls, which has no MaxValue",
        ),
        (
            "a binding service that does not sign its trail",
            "          Secrets:\n            - { Name: AIRLOCK_AUDIT_SIGNING_KEY, ValueFrom: !Ref AuditSigningKeyArn }\n",
            String::new(),
            "BindingTaskDefinition/binding: AIRLOCK_AUDIT_SIGNING_KEY is not given",
        ),
        (
            "an audit archive whose objects can be deleted",
            "      ObjectLockEnabled: true\n",
            String::new(),
            "AuditBucket: no S3 Object Lock",
        ),
        (
            "an archive of CloudWatch Logs' envelopes",
            "            - Type: CloudWatchLogProcessing\n",
            "            - Type: Lambda\n".into(),
            "AuditStream: does not decompress and extract",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, from, to, named) in cases {
        assert_eq!(
            template.matches(from).count(),
            1,
            "{what}: the template changed"
        );
        let path = dir.path().join("mutated.yaml");
        std::fs::write(&path, template.replace(from, &to)).unwrap();
        let out = check(&path);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out.stdout));
        assert!(
            text(&out.stdout).contains(named),
            "{what}: {}",
            text(&out.stdout)
        );
    }
}
