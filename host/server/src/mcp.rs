//! MCP over streamable HTTP, on the official Rust SDK (`rmcp`). `tools/list`
//! shows a user the tools they may call; `tools/call` runs one. A user who
//! must consent first is sent to the provider the way their client can
//! follow: the 2026-07-28 revision's input request, the 2025-11-25 URL
//! elicitation error (-32042), or a result that carries the URL.

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_verify::VerifiedUser;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequest,
    ElicitRequestParams, ErrorCode, ErrorData, Implementation, InputRequest, InputRequiredResult,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::calls::{Answer, Calls, AdmissionError};
use crate::http::consent_message;
use crate::request_id::RequestId;
use crate::registry::Served;
use tracing::Instrument;

/// The MCP error a 2025-11-25 client reads as "open this URL".
const URL_ELICITATION_REQUIRED: ErrorCode = ErrorCode(-32042);

/// One handler per session or stateless request: cheap, state behind an `Arc`.
#[derive(Clone)]
pub(crate) struct Mcp {
    pub(crate) calls: Arc<Calls>,
}

/// The span of the HTTP request that carried this message: rmcp runs
/// handlers in tasks of its own, outside the request's span.
fn span_of(ctx: &RequestContext<RoleServer>, method: &str) -> tracing::Span {
    let id = request_id_of(ctx);
    tracing::info_span!("request", request_id = %id.id, mcp = method)
}

fn request_id_of(ctx: &RequestContext<RoleServer>) -> RequestId {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<RequestId>())
        .cloned()
        .unwrap_or_default()
}

/// The verified caller, which the authentication middleware put on the request.
fn user_of(ctx: &RequestContext<RoleServer>) -> Result<VerifiedUser, ErrorData> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<VerifiedUser>())
        .cloned()
        .ok_or_else(|| ErrorData::internal_error("the request carries no verified user", None))
}

fn describe(served: &Served) -> Tool {
    let m = served.tool.manifest();
    // MCP wants object schemas to say so; a tagged enum's schema (`oneOf`)
    // describes objects without a top-level `type`.
    let object = |v: &Value| {
        let mut schema = v.as_object().cloned().unwrap_or_default();
        schema.entry("type").or_insert_with(|| json!("object"));
        schema
    };
    Tool::new(
        m.name.clone(),
        m.description.clone(),
        Arc::new(object(&m.input_schema)),
    )
    .with_raw_output_schema(Arc::new(object(&m.output_schema)))
    .with_annotations(ToolAnnotations::new().open_world(m.grants.has_hosts()))
}

fn random_id() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).expect("the OS random source");
    hex::encode(b)
}

impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Airlock runs each tool in a sandbox with only the hosts and credentials it declares. \
                 When a tool needs your permission at a provider, the answer carries a URL to open; \
                 call the tool again after granting it.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let user = user_of(&ctx)?;
        let tools = self
            .calls
            .visible(&user)
            .iter()
            .map(|s| describe(s))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let user = user_of(&ctx)?;
        let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        let tool = request.name.to_string();
        let id = request_id_of(&ctx);
        let call = self.calls.call(&id, &user, &tool, arguments);
        let answer = match call.instrument(span_of(&ctx, "tools/call")).await {
            Ok(answer) => answer,
            Err(
                r @ (AdmissionError::UnknownTool(_)
                | AdmissionError::InvalidArguments(_)
                | AdmissionError::InputTooLarge { .. }),
            ) => {
                return Err(ErrorData::invalid_params(r.message(), None));
            }
            Err(r) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(r.message())]).into());
            }
        };
        Ok(match answer {
            Answer::Output(output) => {
                let text = serde_json::to_string_pretty(&output).unwrap_or_default();
                let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                result.structured_content = Some(output);
                result.into()
            }
            Answer::Failed(error) => {
                CallToolResult::error(vec![ContentBlock::text(error.to_string())]).into()
            }
            Answer::Consent {
                provider,
                authorization_url,
            } => return consent(&ctx, &request, &tool, &provider, &authorization_url),
        })
    }
}

/// Send the user to the provider in the way the client said it can follow.
fn consent(
    ctx: &RequestContext<RoleServer>,
    request: &CallToolRequestParams,
    tool: &str,
    provider: &str,
    url: &str,
) -> Result<CallToolResponse, ErrorData> {
    let message = consent_message(tool, provider, url);
    let url_mode = ctx
        .client_capabilities()
        .and_then(|c| c.elicitation)
        .is_some_and(|e| e.url.is_some());
    let version = ctx.protocol_version().unwrap_or_default();
    if url_mode && !version.has_initialize() && request.input_responses.is_none() {
        // 2026-07-28: an input request; the client retries the call after it.
        let elicitation = ElicitRequest::new(ElicitRequestParams::UrlElicitationParams {
            meta: None,
            message,
            url: url.to_string(),
            elicitation_id: random_id(),
        });
        let requests = BTreeMap::from([(
            "consent".to_string(),
            InputRequest::Elicitation(elicitation),
        )]);
        return Ok(InputRequiredResult::from_input_requests(requests).into());
    }
    if url_mode && version == ProtocolVersion::V_2025_11_25 {
        return Err(ErrorData::new(
            URL_ELICITATION_REQUIRED,
            message.clone(),
            Some(json!({"elicitations": [{
                "mode": "url",
                "elicitationId": random_id(),
                "url": url,
                "message": message,
            }]})),
        ));
    }
    let mut result = CallToolResult::error(vec![ContentBlock::text(message)]);
    result.structured_content = Some(json!({
        "authorization_required": {"provider": provider, "authorization_url": url}
    }));
    Ok(result.into())
}
