//! Who may call which tool: Cedar, the language AgentCore Gateway uses for
//! the same decision. Principal: the verified user (sub, email, groups).
//! Resource: the tool (name, providers, scopes, hosts). Actions: `list` and
//! `call`; a call's context carries its arguments. Default deny: without
//! policies nothing is allowed, except in local mode.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use airlock_runtime::Tool;
use airlock_verify::VerifiedUser;
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

/// The schema the policies are checked against when the operator gives none.
pub const DEFAULT_SCHEMA: &str = include_str!("airlock.cedarschema");

/// Why the policies and schema cannot be used: refused at start, naming
/// what to fix. Cedar's errors are in the text, not also a source.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizationError {
    /// Policies read arguments the schema does not declare; Cedar would
    /// type those reads as never true, so a `forbid` on them never fires.
    #[error(
        "the Cedar policies read arguments the schema's `Arguments` type does not declare: {}; declare them (e.g. \"{}\"?: Long) in the schema",
        .0.join(", "),
        .0.first().map_or("", String::as_str)
    )]
    UndeclaredArguments(Vec<String>),
    /// The schema does not parse.
    #[error("the Cedar schema: {0}")]
    Schema(Box<cedar_policy::CedarSchemaError>),
    /// The schema parses but cannot be read as JSON.
    #[error("the Cedar schema: {0}")]
    SchemaJson(Box<cedar_policy::SchemaError>),
    /// The schema's `Arguments` type nests past what is followed.
    #[error("the Cedar schema: `{0}` nests too deep")]
    ArgumentsNesting(String),
    /// An argument's type is one no call's arguments can have.
    #[error(
        "the Cedar schema: argument `{at}` is of type `{type_name}`; arguments are Long, String, Bool, Set or record"
    )]
    ArgumentType {
        /// The argument's path in `Arguments`.
        at: String,
        /// The type the schema gives it.
        type_name: String,
    },
    /// The policies do not parse.
    #[error("the Cedar policies: {0}")]
    Policies(Box<cedar_policy::ParseErrors>),
    /// The policies do not type-check against the schema.
    #[error("the Cedar policies do not match the schema: {}", join(.0, "; "))]
    Validation(Vec<cedar_policy::ValidationError>),
    /// The schema's actions cannot be made entities.
    #[error("the Cedar schema's actions: {0}")]
    Actions(Box<cedar_policy::entities_errors::EntitiesError>),
    /// The schema's users or tools need what Airlock does not give them.
    #[error("the Cedar schema does not describe Airlock's users and tools: {0}")]
    Undescribed(Box<cedar_policy::entities_errors::EntitiesError>),
    /// An entity of a fixed shape could not be built.
    #[error(transparent)]
    Entity(#[from] EntityError),
}

/// A user or tool could not be made a Cedar entity.
#[derive(Debug, thiserror::Error)]
pub enum EntityError {
    /// The entity type's name does not parse.
    #[error("{0}")]
    TypeName(Box<cedar_policy::ParseErrors>),
    /// An attribute could not be evaluated.
    #[error("{0}")]
    Attributes(Box<cedar_policy::EntityAttrEvaluationError>),
}

/// A decision that could not be made; the call or listing is refused and
/// this goes to the log.
#[derive(Debug, thiserror::Error)]
enum DecisionError {
    /// The caller could not be made an entity.
    #[error(transparent)]
    Principal(#[from] EntityError),
    /// The arguments are not what the schema declares.
    #[error("the arguments: {0}")]
    Arguments(ArgumentError),
    /// The context could not be built.
    #[error("{0}")]
    Context(Box<cedar_policy::ContextCreationError>),
    /// The request does not match the schema.
    #[error("{0}")]
    Request(Box<cedar_policy::RequestValidationError>),
    /// The entities could not be put together.
    #[error("{0}")]
    Entities(Box<cedar_policy::entities_errors::EntitiesError>),
    /// Cedar skipped a policy it could not evaluate; a skipped `forbid`
    /// must not allow anything.
    #[error("a policy could not be evaluated: {0}")]
    Evaluation(Box<cedar_policy::AuthorizationError>),
}

/// Why a call's arguments have no exact value of the schema's type.
#[derive(Debug, thiserror::Error)]
enum ArgumentError {
    /// A `null`, which a policy would read as absent.
    #[error("null has no value a policy can decide on")]
    Null,
    /// A number with a fraction, or beyond 64 bits.
    #[error("{0} is not an integer a policy can compare (64-bit, no fraction)")]
    NotLong(serde_json::Number),
    /// A record's attribute is wrong.
    #[error("`{name}`: {error}")]
    Attribute {
        /// The attribute.
        name: String,
        /// What is wrong with it.
        error: Box<ArgumentError>,
    },
    /// A required attribute is absent.
    #[error("`{0}` is missing")]
    Missing(String),
    /// Cedar refused the record.
    #[error("{0}")]
    Record(Box<cedar_policy::ExpressionConstructionError>),
    /// A value of another kind than the schema's.
    #[error("{found} where the schema says {expected:?}")]
    Kind {
        /// What the value is (`a string`).
        found: &'static str,
        /// What the schema says.
        expected: ArgType,
    },
}

/// `items`' texts joined by `sep`.
fn join(items: &[impl std::fmt::Display], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

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
    schema: Schema,
    /// The schema's `Arguments` type: what policies may read of a call.
    arguments: ArgType,
    authorizer: Authorizer,
    /// The schema's actions (and their groups), which `action in` reads.
    actions: Vec<Entity>,
    list: EntityUid,
    call: EntityUid,
    /// The entities of each user and tool decided on: building them computes
    /// their hierarchy's closure, which a decision need not repeat.
    entities: Mutex<EntityCache>,
}

/// Users and tools whose entities are kept; past it the cache starts over.
const CACHED_PAIRS: usize = 4096;

/// Entities by user id, then tool name; each with the user's and the tool's
/// entity they were built from, compared on use (claims and grants change).
#[derive(Default)]
struct EntityCache {
    by_user: HashMap<String, HashMap<String, Cached>>,
    pairs: usize,
}

struct Cached {
    principal: Entity,
    tool: Entity,
    entities: Arc<Entities>,
}

impl Authorization {
    /// Parse and check `policies` against `schema` (the default one when `None`).
    pub(crate) fn new(
        policies: &str,
        schema: Option<&str>,
    ) -> Result<Authorization, AuthorizationError> {
        let schema_text = schema.unwrap_or(DEFAULT_SCHEMA);
        let undeclared = undeclared_arguments(policies, schema_text)?;
        if !undeclared.is_empty() {
            // Cedar types a read of an undeclared attribute as never true,
            // silently: a `forbid` on it would never fire.
            return Err(AuthorizationError::UndeclaredArguments(undeclared));
        }
        let (schema, _) = Schema::from_cedarschema_str(schema_text)
            .map_err(|e| AuthorizationError::Schema(Box::new(e)))?;
        let arguments = arguments_type(schema_text)?;
        let policies: PolicySet = policies
            .parse()
            .map_err(|e| AuthorizationError::Policies(Box::new(e)))?;
        let checked = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !checked.validation_passed() {
            return Err(AuthorizationError::Validation(
                checked.validation_errors().cloned().collect(),
            ));
        }
        let actions = schema
            .action_entities()
            .map_err(|e| AuthorizationError::Actions(Box::new(e)))?
            .iter()
            .cloned()
            .collect();
        // Users and tools are built here in fixed shapes, so they are checked
        // against the schema once, with and without the optional email,
        // rather than on every request.
        let with_email = claims_entity("a", Some("a@example.com"), &[])?;
        let without = claims_entity("b", None, &["g".to_string()])?;
        let tool = tool_entity("t", ["p".to_string()], ["s".to_string()], ["h".to_string()])?;
        Entities::from_entities([with_email, without, tool], Some(&schema))
            .map_err(|e| AuthorizationError::Undescribed(Box::new(e)))?;
        Ok(Authorization {
            policies,
            schema,
            arguments,
            authorizer: Authorizer::new(),
            actions,
            list: uid("Airlock::Action", Action::List.id())?,
            call: uid("Airlock::Action", Action::Call.id())?,
            entities: Mutex::default(),
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
    ) -> Result<Decision, DecisionError> {
        let principal = principal(user.id().as_str(), user.claims())?;
        self.decide_as(principal, action, tool, arguments)
    }

    fn decide_as(
        &self,
        principal: Entity,
        action: Action,
        tool: &Entity,
        arguments: Option<&serde_json::Value>,
    ) -> Result<Decision, DecisionError> {
        // Arguments become what the schema declares, each with its exact
        // value, or the call is refused: a value a policy would read as
        // absent or as an error would let a `forbid` pass.
        let context = match arguments {
            Some(args) => {
                let projected = project(args, &self.arguments).map_err(DecisionError::Arguments)?;
                Context::from_pairs([("arguments".to_string(), projected)])
                    .map_err(|e| DecisionError::Context(Box::new(e)))?
            }
            None => Context::empty(),
        };
        let request = Request::new(
            principal.uid(),
            match action {
                Action::List => self.list.clone(),
                Action::Call => self.call.clone(),
            },
            tool.uid(),
            context,
            Some(&self.schema),
        )
        .map_err(|e| DecisionError::Request(Box::new(e)))?;
        let entities = self.entities_of(principal, tool)?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        // A policy that could not be evaluated is skipped by Cedar; a
        // skipped `forbid` must not allow anything.
        if let Some(e) = response.diagnostics().errors().next() {
            return Err(DecisionError::Evaluation(Box::new(e.clone())));
        }
        Ok(response.decision())
    }

    /// The actions, `principal` and `tool` as entities: built once per user
    /// and tool, and again when either entity changed.
    fn entities_of(
        &self,
        principal: Entity,
        tool: &Entity,
    ) -> Result<Arc<Entities>, DecisionError> {
        let user = principal.uid().id().unescaped().to_string();
        let name = tool.uid().id().unescaped().to_string();
        {
            let cache = self.entities.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.by_user.get(&user).and_then(|t| t.get(&name))
                // Cedar's `==` on entities compares their uids alone.
                && c.principal.deep_eq(&principal)
                && c.tool.deep_eq(tool)
            {
                return Ok(c.entities.clone());
            }
        }
        let entities = Arc::new(
            Entities::from_entities(
                self.actions
                    .iter()
                    .cloned()
                    .chain([principal.clone(), tool.clone()]),
                None,
            )
            .map_err(|e| DecisionError::Entities(Box::new(e)))?,
        );
        let mut cache = self.entities.lock().unwrap_or_else(|p| p.into_inner());
        if cache.pairs >= CACHED_PAIRS {
            *cache = EntityCache::default();
        }
        let kept = Cached {
            principal,
            tool: tool.clone(),
            entities: entities.clone(),
        };
        if cache.by_user.entry(user).or_default().insert(name, kept).is_none() {
            cache.pairs += 1;
        }
        Ok(entities)
    }
}

/// The Cedar entity of a loaded tool: its name and what it was granted.
pub(crate) fn tool_entity_of(tool: &Tool) -> Result<Entity, EntityError> {
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
) -> Result<Entity, EntityError> {
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
    .map_err(|e| EntityError::Attributes(Box::new(e)))
}

/// The user as policies see them. An email the IdP did not verify is
/// anyone's to claim: it is not shown.
fn principal(id: &str, claims: &airlock_verify::Claims) -> Result<Entity, EntityError> {
    let email = claims
        .email
        .as_deref()
        .filter(|_| claims.email_verified == Some(true));
    claims_entity(id, email, &claims.groups)
}

fn claims_entity(sub: &str, email: Option<&str>, groups: &[String]) -> Result<Entity, EntityError> {
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
    Entity::new(uid("Airlock::User", sub)?, attrs, HashSet::new())
        .map_err(|e| EntityError::Attributes(Box::new(e)))
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, EntityError> {
    let kind: EntityTypeName = kind
        .parse()
        .map_err(|e| EntityError::TypeName(Box::new(e)))?;
    Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
}

fn strings(items: impl IntoIterator<Item = String>) -> RestrictedExpression {
    RestrictedExpression::new_set(items.into_iter().map(RestrictedExpression::new_string))
}

/// The argument names `policies` read (`context.arguments.NAME`,
/// `context.arguments has NAME`) that the schema's `Airlock::Arguments` lacks.
fn undeclared_arguments(policies: &str, schema: &str) -> Result<Vec<String>, AuthorizationError> {
    let json = schema_json(schema)?;
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

/// `schema` (the Cedar schema's text) as Cedar's JSON schema format.
fn schema_json(schema: &str) -> Result<serde_json::Value, AuthorizationError> {
    let (fragment, _) = cedar_policy::SchemaFragment::from_cedarschema_str(schema)
        .map_err(|e| AuthorizationError::Schema(Box::new(e)))?;
    fragment
        .to_json_value()
        .map_err(|e| AuthorizationError::SchemaJson(Box::new(e)))
}

/// A type of the schema's `Arguments`: what a call's arguments become.
#[derive(Debug, Clone, PartialEq)]
enum ArgType {
    Long,
    String,
    Bool,
    Set(Box<ArgType>),
    /// Attributes: name, type, required.
    Record(Vec<(String, ArgType, bool)>),
}

/// The `Arguments` type of `schema` (the Cedar schema's text), its common
/// types resolved. Types arguments cannot have (entities, extension types)
/// are refused at start.
fn arguments_type(schema: &str) -> Result<ArgType, AuthorizationError> {
    let json = schema_json(schema)?;
    let common = &json["Airlock"]["commonTypes"];
    arg_type(&common["Arguments"], common, "Arguments", 0)
}

fn arg_type(
    t: &serde_json::Value,
    common: &serde_json::Value,
    at: &str,
    depth: usize,
) -> Result<ArgType, AuthorizationError> {
    if depth > 16 {
        return Err(AuthorizationError::ArgumentsNesting(at.to_string()));
    }
    let name = match t["type"].as_str() {
        Some("EntityOrCommon") => t["name"].as_str().unwrap_or_default(),
        Some(other) => other,
        None => "",
    };
    match name {
        "Long" => Ok(ArgType::Long),
        "String" => Ok(ArgType::String),
        "Boolean" | "Bool" => Ok(ArgType::Bool),
        "Set" => Ok(ArgType::Set(Box::new(arg_type(
            &t["element"],
            common,
            at,
            depth + 1,
        )?))),
        "Record" => {
            let mut attrs = Vec::new();
            if let Some(map) = t["attributes"].as_object() {
                for (k, v) in map {
                    let required = v["required"].as_bool().unwrap_or(true);
                    attrs.push((
                        k.clone(),
                        arg_type(v, common, &format!("{at}.{k}"), depth + 1)?,
                        required,
                    ));
                }
            }
            Ok(ArgType::Record(attrs))
        }
        other if common.get(other).is_some() => arg_type(&common[other], common, at, depth + 1),
        other => Err(AuthorizationError::ArgumentType {
            at: at.to_string(),
            type_name: other.to_string(),
        }),
    }
}

/// `value` as the Cedar value of type `t`, exactly, or why not. Built
/// directly (never through Cedar's JSON), so no argument can pass for an
/// entity or extension value; an object is always a record.
fn project(value: &serde_json::Value, t: &ArgType) -> Result<RestrictedExpression, ArgumentError> {
    use serde_json::Value;
    match (t, value) {
        (_, Value::Null) => Err(ArgumentError::Null),
        (ArgType::Long, Value::Number(n)) => exact_long(n)
            .map(RestrictedExpression::new_long)
            .ok_or_else(|| ArgumentError::NotLong(n.clone())),
        (ArgType::String, Value::String(s)) => Ok(RestrictedExpression::new_string(s.clone())),
        (ArgType::Bool, Value::Bool(b)) => Ok(RestrictedExpression::new_bool(*b)),
        (ArgType::Set(element), Value::Array(items)) => Ok(RestrictedExpression::new_set(
            items
                .iter()
                .map(|i| project(i, element))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        (ArgType::Record(attrs), Value::Object(map)) => {
            let mut fields = Vec::new();
            for (name, t, required) in attrs {
                match map.get(name) {
                    Some(v) => fields.push((
                        name.clone(),
                        project(v, t).map_err(|e| ArgumentError::Attribute {
                            name: name.clone(),
                            error: Box::new(e),
                        })?,
                    )),
                    None if *required => return Err(ArgumentError::Missing(name.clone())),
                    None => {}
                }
            }
            // What the schema does not declare, no policy reads (checked at start).
            RestrictedExpression::new_record(fields).map_err(|e| ArgumentError::Record(Box::new(e)))
        }
        (t, v) => Err(ArgumentError::Kind {
            found: kind(v),
            expected: t.clone(),
        }),
    }
}

/// A JSON number's exact 64-bit integer value: `11`, `11.0`, `1e2`; not
/// `11.5`, nor one beyond the range.
fn exact_long(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // i64::MAX is not a float; 2^63 is, and is already out of range.
    (f.is_finite() && f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63))
        .then_some(f as i64)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
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
        let e = Authorization::new(policies, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`Arguments` type does not declare: top"), "{e}");
        let e = Authorization::new(
            "permit (principal, action == Airlock::Action::\"delete\", resource);",
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("delete"), "{e}");
        // Checked once at start: a schema whose users need what Airlock
        // does not know would otherwise fail every decision.
        let schema = DEFAULT_SCHEMA.replace(
            "\"sub\": String,",
            "\"sub\": String, \"department\": String,",
        );
        let e = Authorization::new("permit (principal, action, resource);", Some(&schema))
            .err()
            .unwrap()
            .to_string();
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
        // What the schema does not declare is dropped, never read.
        assert_eq!(
            decide(serde_json::json!({"target": {}, "n": 1.5})),
            Decision::Allow
        );
    }

    /// The example's rule: no more than ten words. Every spelling of a
    /// number above ten is refused, and a value with no exact number is
    /// refused rather than read as absent (a `forbid` that does not fire).
    #[test]
    fn argument_rules_fail_closed_on_every_spelling_of_a_number() {
        let policies = include_str!("../../../examples/authorization.cedar");
        let schema = include_str!("../../../examples/airlock.cedarschema");
        let authz = Authorization::new(policies, Some(schema)).unwrap();
        let user = VerifiedUser::local(airlock_policy::UserId::parse("alice").unwrap());
        let tool = tool_entity("text-stats", [], [], []).unwrap();
        let allowed = |args: &str| {
            let args: serde_json::Value = serde_json::from_str(args).unwrap();
            authz.allows(&user, Action::Call, &tool, Some(&args))
        };
        assert!(allowed(r#"{"text": "a", "top": 3}"#));
        assert!(allowed(r#"{"text": "a", "top": 3.0}"#), "3.0 is three");
        assert!(
            allowed(r#"{"text": "a"}"#),
            "absent: the rule has nothing to read"
        );
        for refused in [
            r#"{"text": "a", "top": 11}"#,
            r#"{"text": "a", "top": 11.0}"#,
            r#"{"text": "a", "top": 1e2}"#,
            r#"{"text": "a", "top": 11.5}"#,
            r#"{"text": "a", "top": 1e300}"#,
            r#"{"text": "a", "top": 18446744073709551615}"#,
            r#"{"text": "a", "top": null}"#,
            r#"{"text": "a", "top": "11"}"#,
            r#"{"text": "a", "top": [11]}"#,
            r#"["not", "an", "object"]"#,
        ] {
            assert!(!allowed(refused), "{refused}");
        }
    }

    /// Entities are kept per user and tool; a user's new groups and a
    /// tool's new grants are decided on, never the kept ones.
    #[test]
    fn kept_entities_never_outlive_a_change_of_claims_or_grants() {
        let authz = Authorization::new(
            r#"permit (principal, action, resource)
                 when { principal.groups.contains("admins") && resource.providers.contains("github") };"#,
            None,
        )
        .unwrap();
        let admin = || claims_entity("alice", None, &["admins".to_string()]).unwrap();
        let demoted = || claims_entity("alice", None, &[]).unwrap();
        let github = || tool_entity("issues", ["github".into()], [], []).unwrap();
        let none = || tool_entity("issues", [], [], []).unwrap();
        let decide = |p: Entity, t: Entity| authz.decide_as(p, Action::Call, &t, None).unwrap();
        for _ in 0..2 {
            assert_eq!(decide(admin(), github()), Decision::Allow);
            assert_eq!(decide(demoted(), github()), Decision::Deny);
            assert_eq!(decide(admin(), none()), Decision::Deny);
        }
        assert_eq!(authz.entities.lock().unwrap().pairs, 1, "one user and tool, kept once");
    }

    #[test]
    fn an_email_reaches_policies_only_when_the_idp_verified_it() {
        for (verified, shown) in [(Some(true), true), (Some(false), false), (None, false)] {
            let claims = airlock_verify::Claims {
                sub: "mallory".into(),
                email: Some("boss@example.com".into()),
                email_verified: verified,
                ..Default::default()
            };
            let entity = principal("mallory", &claims).unwrap();
            assert_eq!(entity.attr("email").is_some(), shown, "{verified:?}");
        }
        // ALB and Cognito send the flag as a string.
        let alb: airlock_verify::Claims = serde_json::from_str(
            r#"{"sub": "a", "email": "a@example.com", "email_verified": "true"}"#,
        )
        .unwrap();
        assert!(principal("a", &alb).unwrap().attr("email").is_some());
    }
}
