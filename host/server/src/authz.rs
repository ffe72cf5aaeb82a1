//! Who may call which tool: Cedar, the language AgentCore Gateway uses for
//! the same decision. Principal: the verified user (sub, email, groups).
//! Resource: the tool (name, providers, scopes, hosts). Actions: `list` and
//! `call`; a call's context carries its arguments. Default deny: without
//! policies nothing is allowed, except in local mode.

use std::collections::HashSet;

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
    schema: Schema,
    policies: PolicySet,
    authorizer: Authorizer,
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
        Ok(Authorization {
            schema,
            policies,
            authorizer: Authorizer::new(),
        })
    }

    /// Everything allowed: local mode without a policy file.
    pub(crate) fn permit_all() -> Authorization {
        Authorization::new("permit (principal, action, resource);", None)
            .expect("the permit-all policy checks")
    }

    /// Whether `user` may do `action` on `tool` (with `arguments` for a call).
    pub(crate) fn allows(
        &self,
        user: &VerifiedUser,
        action: Action,
        tool: &Tool,
        arguments: Option<&serde_json::Value>,
    ) -> bool {
        match self.decide(user, action, tool, arguments) {
            Ok(decision) => decision == Decision::Allow,
            Err(e) => {
                tracing::warn!(tool = %tool.manifest().name, "authorization could not be decided: {e}");
                false
            }
        }
    }

    fn decide(
        &self,
        user: &VerifiedUser,
        action: Action,
        tool: &Tool,
        arguments: Option<&serde_json::Value>,
    ) -> Result<Decision, String> {
        let uid = |kind: &str, id: &str| -> Result<EntityUid, String> {
            let kind: EntityTypeName = kind.parse().map_err(|e| format!("{e}"))?;
            Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
        };
        let strings = |items: Vec<String>| {
            RestrictedExpression::new_set(items.into_iter().map(RestrictedExpression::new_string))
        };
        let claims = user.claims();
        let principal = uid("Airlock::User", user.id().as_str())?;
        let mut attrs = std::collections::HashMap::from([
            (
                "sub".to_string(),
                RestrictedExpression::new_string(claims.sub.clone()),
            ),
            ("groups".to_string(), strings(claims.groups.clone())),
        ]);
        if let Some(email) = &claims.email {
            attrs.insert(
                "email".into(),
                RestrictedExpression::new_string(email.clone()),
            );
        }
        let user_entity =
            Entity::new(principal.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())?;
        let manifest = tool.manifest();
        let grants = &tool.permissions().grants;
        let resource = uid("Airlock::Tool", &manifest.name)?;
        let tool_entity = Entity::new(
            resource.clone(),
            std::collections::HashMap::from([
                (
                    "name".to_string(),
                    RestrictedExpression::new_string(manifest.name.clone()),
                ),
                (
                    "providers".to_string(),
                    strings(
                        grants
                            .oauth
                            .iter()
                            .map(|g| g.provider.to_string())
                            .collect(),
                    ),
                ),
                (
                    "scopes".to_string(),
                    strings(
                        grants
                            .oauth
                            .iter()
                            .flat_map(|g| g.scopes.iter().map(str::to_string))
                            .collect(),
                    ),
                ),
                (
                    "hosts".to_string(),
                    strings(grants.all_hosts().map(|h| h.to_string()).collect()),
                ),
            ]),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())?;
        let entities = Entities::from_entities([user_entity, tool_entity], Some(&self.schema))
            .map_err(|e| e.to_string())?;
        let action = uid("Airlock::Action", action.id())?;
        let context = match arguments {
            Some(args) => Context::from_json_value(
                serde_json::json!({ "arguments": cedar_value(args) }),
                None,
            )
            .map_err(|e| e.to_string())?,
            None => Context::empty(),
        };
        // The context is not checked against the schema: arguments the schema
        // does not name are simply there for no policy to read.
        let request =
            Request::new(principal, action, resource, context, None).map_err(|e| e.to_string())?;
        Ok(self
            .authorizer
            .is_authorized(&request, &self.policies, &entities)
            .decision())
    }
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

/// Arguments as Cedar can hold them: no nulls, no fractions (a policy that
/// reads such an argument finds it absent).
fn cedar_value(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| representable(v))
                .map(|(k, v)| (k.clone(), cedar_value(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|v| representable(v))
                .map(cedar_value)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn representable(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Number(n) => n.is_i64(),
        _ => true,
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
    }
}
