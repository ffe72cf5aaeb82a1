//! Who may call which tool: Cedar, the language AgentCore Gateway uses for
//! the same decision. Principal: the verified user (sub, email, groups).
//! Resource: the tool (name, providers, scopes, hosts). Actions: `list` and
//! `call`; a call's context carries its arguments. Default deny: without
//! policies nothing is allowed, except in local mode.

use std::collections::{HashMap, HashSet};

use airlock_runtime::Tool;
use airlock_verify::VerifiedUser;
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

/// The schema the policies are checked against when the operator gives none.
pub const DEFAULT_SCHEMA: &str = include_str!("airlock.cedarschema");

/// What is being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    List,
    Call,
}

impl Action {
    fn id(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Call => "call",
        }
    }
}

pub(crate) struct Authorization {
    policies: PolicySet,
    authorizer: Authorizer,
    /// The schema's actions (and their groups), which `action in` reads.
    actions: Vec<Entity>,
    list: EntityUid,
    call: EntityUid,
}

impl Authorization {
    /// Parse and check `policies` against `schema` (the default one when `None`).
    pub(crate) fn new(policies: &str, schema: Option<&str>) -> Result<Authorization, String> {
        let schema_text = schema.unwrap_or(DEFAULT_SCHEMA);
        let undeclared = undeclared_arguments(policies, schema_text)?;
        if !undeclared.is_empty() {
            // Cedar types a read of an undeclared attribute as never true,
            // silently: a `forbid` on it would never fire.
            return Err(format!(
                "the Cedar policies read arguments the schema's `Arguments` type does not declare: {}; declare them (e.g. \"{}\"?: Long) in the schema",
                undeclared.join(", "),
                undeclared[0]
            ));
        }
        let (schema, _) = Schema::from_cedarschema_str(schema_text)
            .map_err(|e| format!("the Cedar schema: {e}"))?;
        let policies: PolicySet = policies
            .parse()
            .map_err(|e: cedar_policy::ParseErrors| format!("the Cedar policies: {e}"))?;
        let checked = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !checked.validation_passed() {
            let errors: Vec<String> = checked.validation_errors().map(|e| e.to_string()).collect();
            return Err(format!(
                "the Cedar policies do not match the schema: {}",
                errors.join("; ")
            ));
        }
        let actions = schema
            .action_entities()
            .map_err(|e| format!("the Cedar schema's actions: {e}"))?
            .iter()
            .cloned()
            .collect();
        // Users and tools are built here in fixed shapes, so they are checked
        // against the schema once, with and without the optional email,
        // rather than on every request.
        let with_email = claims_entity("a", Some("a@example.com"), &[])?;
        let without = claims_entity("b", None, &["g".to_string()])?;
        let tool = tool_entity("t", ["p".to_string()], ["s".to_string()], ["h".to_string()])?;
        Entities::from_entities([with_email, without, tool], Some(&schema)).map_err(|e| {
            format!("the Cedar schema does not describe Airlock's users and tools: {e}")
        })?;
        Ok(Authorization {
            policies,
            authorizer: Authorizer::new(),
            actions,
            list: uid("Airlock::Action", Action::List.id())?,
            call: uid("Airlock::Action", Action::Call.id())?,
        })
    }

    /// Everything allowed: local mode without a policy file.
    pub(crate) fn permit_all() -> Authorization {
        Authorization::new("permit (principal, action, resource);", None)
            .expect("the permit-all policy checks")
    }

    /// Whether `user` may do `action` on `tool` (its entity, from
    /// [`tool_entity_of`]), with `arguments` for a call.
    pub(crate) fn allows(
        &self,
        user: &VerifiedUser,
        action: Action,
        tool: &Entity,
        arguments: Option<&serde_json::Value>,
    ) -> bool {
        match self.decide(user, action, tool, arguments) {
            Ok(decision) => decision == Decision::Allow,
            Err(e) => {
                tracing::warn!(tool = %tool.uid().id().unescaped(), "authorization could not be decided: {e}");
                false
            }
        }
    }

    fn decide(
        &self,
        user: &VerifiedUser,
        action: Action,
        tool: &Entity,
        arguments: Option<&serde_json::Value>,
    ) -> Result<Decision, String> {
        let claims = user.claims();
        let principal = claims_entity(user.id().as_str(), claims.email.as_deref(), &claims.groups)?;
        let request = Request::new(
            principal.uid(),
            match action {
                Action::List => self.list.clone(),
                Action::Call => self.call.clone(),
            },
            tool.uid(),
            match arguments.and_then(cedar_value) {
                Some(args) => Context::from_pairs([("arguments".to_string(), args)])
                    .map_err(|e| e.to_string())?,
                None => Context::empty(),
            },
            // Arguments the schema does not name are simply there for no policy to read.
            None,
        )
        .map_err(|e| e.to_string())?;
        let entities = Entities::from_entities(
            self.actions
                .iter()
                .cloned()
                .chain([principal, tool.clone()]),
            None,
        )
        .map_err(|e| e.to_string())?;
        Ok(self
            .authorizer
            .is_authorized(&request, &self.policies, &entities)
            .decision())
    }
}

/// The Cedar entity of a loaded tool: its name and what it was granted.
pub(crate) fn tool_entity_of(tool: &Tool) -> Result<Entity, String> {
    let grants = &tool.permissions().grants;
    tool_entity(
        &tool.manifest().name,
        grants.oauth.iter().map(|g| g.provider.to_string()),
        grants
            .oauth
            .iter()
            .flat_map(|g| g.scopes.iter().map(str::to_string)),
        grants.all_hosts().map(|h| h.to_string()),
    )
}

fn tool_entity(
    name: &str,
    providers: impl IntoIterator<Item = String>,
    scopes: impl IntoIterator<Item = String>,
    hosts: impl IntoIterator<Item = String>,
) -> Result<Entity, String> {
    Entity::new(
        uid("Airlock::Tool", name)?,
        HashMap::from([
            (
                "name".to_string(),
                RestrictedExpression::new_string(name.to_string()),
            ),
            ("providers".to_string(), strings(providers)),
            ("scopes".to_string(), strings(scopes)),
            ("hosts".to_string(), strings(hosts)),
        ]),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())
}

fn claims_entity(sub: &str, email: Option<&str>, groups: &[String]) -> Result<Entity, String> {
    let mut attrs = HashMap::from([
        (
            "sub".to_string(),
            RestrictedExpression::new_string(sub.to_string()),
        ),
        ("groups".to_string(), strings(groups.iter().cloned())),
    ]);
    if let Some(email) = email {
        attrs.insert(
            "email".into(),
            RestrictedExpression::new_string(email.to_string()),
        );
    }
    Entity::new(uid("Airlock::User", sub)?, attrs, HashSet::new()).map_err(|e| e.to_string())
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let kind: EntityTypeName = kind.parse().map_err(|e| format!("{e}"))?;
    Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
}

fn strings(items: impl IntoIterator<Item = String>) -> RestrictedExpression {
    RestrictedExpression::new_set(items.into_iter().map(RestrictedExpression::new_string))
}

/// The argument names `policies` read (`context.arguments.NAME`,
/// `context.arguments has NAME`) that the schema's `Airlock::Arguments` lacks.
fn undeclared_arguments(policies: &str, schema: &str) -> Result<Vec<String>, String> {
    let (fragment, _) = cedar_policy::SchemaFragment::from_cedarschema_str(schema)
        .map_err(|e| format!("the Cedar schema: {e}"))?;
    let json = fragment
        .to_json_value()
        .map_err(|e| format!("the Cedar schema: {e}"))?;
    let declared = &json["Airlock"]["commonTypes"]["Arguments"]["attributes"];
    let mut read = Vec::new();
    for marker in ["context.arguments.", "context.arguments has "] {
        for (at, _) in policies.match_indices(marker) {
            let name: String = policies[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && declared.get(&name).is_none() && !read.contains(&name) {
                read.push(name);
            }
        }
    }
    Ok(read)
}

/// Arguments as Cedar values, built directly: an object is always a
/// record, so no argument can pass for an entity or an extension value
/// (Cedar's JSON escapes `__entity`, `__extn`). Nulls and fractions have no
/// Cedar form; a policy that reads one finds it absent.
fn cedar_value(v: &serde_json::Value) -> Option<RestrictedExpression> {
    use serde_json::Value;
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => n.as_i64().map(RestrictedExpression::new_long),
        Value::String(s) => Some(RestrictedExpression::new_string(s.clone())),
        Value::Array(items) => Some(RestrictedExpression::new_set(
            items.iter().filter_map(cedar_value),
        )),
        Value::Object(map) => RestrictedExpression::new_record(
            map.iter()
                .filter_map(|(k, v)| cedar_value(v).map(|e| (k.clone(), e))),
        )
        .ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_policies_check_against_the_example_schema() {
        let policies = include_str!("../../../examples/authorization.cedar");
        let schema = include_str!("../../../examples/airlock.cedarschema");
        assert!(Authorization::new(policies, Some(schema)).is_ok());
        // Against the built-in schema the argument rule would never fire;
        // it is refused, naming the argument to declare.
        let e = Authorization::new(policies, None).err().unwrap();
        assert!(e.contains("`Arguments` type does not declare: top"), "{e}");
        let e = Authorization::new(
            "permit (principal, action == Airlock::Action::\"delete\", resource);",
            None,
        )
        .err()
        .unwrap();
        assert!(e.contains("delete"), "{e}");
        // Checked once at start: a schema whose users need what Airlock
        // does not know would otherwise fail every decision.
        let schema = DEFAULT_SCHEMA.replace(
            "\"sub\": String,",
            "\"sub\": String, \"department\": String,",
        );
        let e = Authorization::new("permit (principal, action, resource);", Some(&schema))
            .err()
            .unwrap();
        assert!(
            e.contains("does not describe Airlock's users and tools"),
            "{e}"
        );
    }

    #[test]
    fn arguments_are_data_never_entity_references() {
        // A caller's object spelled like Cedar's JSON escape for an entity
        // must stay a record: read as `Airlock::User::"admin"` it would make
        // this forbid fail to evaluate, and so not apply.
        let schema = DEFAULT_SCHEMA.replace(
            "type Arguments = {};",
            "type Arguments = { \"target\"?: { \"__entity\"?: { \"type\": String, \"id\": String } } };",
        );
        let policies = r#"
            permit (principal, action, resource);
            forbid (principal, action == Airlock::Action::"call", resource)
              when { context has arguments && context.arguments has target
                     && context.arguments.target has "__entity" };
        "#;
        let authz = Authorization::new(policies, Some(&schema)).unwrap();
        let user = VerifiedUser::local(airlock_policy::UserId::parse("alice").unwrap());
        let files = tool_entity("files", [], [], []).unwrap();
        let decide = |args: serde_json::Value| {
            authz
                .decide(&user, Action::Call, &files, Some(&args))
                .unwrap()
        };
        let escape =
            serde_json::json!({"target": {"__entity": {"type": "Airlock::User", "id": "admin"}}});
        assert_eq!(decide(escape), Decision::Deny);
        assert_eq!(decide(serde_json::json!({"target": {}})), Decision::Allow);
        // Nulls and fractions have no Cedar form and read as absent.
        let absent = serde_json::json!({"target": {"__entity": null}, "n": 1.5});
        assert_eq!(decide(absent), Decision::Allow);
    }
}
