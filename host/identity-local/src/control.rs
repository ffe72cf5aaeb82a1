//! The control-plane calls the host makes when it accepts a tool: each tool
//! gets a workload identity of its own, so that consents belong to it.
//! Created identities are stored; those in the configuration file are not
//! changed through the API (the file is their source).

use std::sync::Arc;

use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiError, internal, ok};
use crate::config::{check_url, valid_workload_name};
use crate::service::{Service, Workload};
use crate::store::WorkloadRow;

/// How many return URLs one workload identity may list.
const MAX_RETURN_URLS: usize = 50;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkloadInput {
    name: String,
    #[serde(default)]
    allowed_resource_oauth2_return_urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NameInput {
    name: String,
}

impl Service {
    fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:bedrock-agentcore:us-east-1:000000000000:workload-identity-directory/default/workload-identity/{name}"
        )
    }

    fn describe(&self, name: &str, w: &Workload) -> Response {
        let (created, updated) = w.created.unwrap_or((0, 0));
        ok(json!({
            "name": name,
            "workloadIdentityArn": self.arn(name),
            "allowedResourceOauth2ReturnUrls": w.allowed_return_urls,
            "createdTime": created,
            "lastUpdatedTime": updated,
        }))
    }

    fn checked(input: &WorkloadInput) -> Result<Vec<String>, ApiError> {
        if !valid_workload_name(&input.name) {
            return Err(ApiError::validation(
                "name must be 3-255 of A-Z a-z 0-9 _ . -",
            ));
        }
        let urls = input
            .allowed_resource_oauth2_return_urls
            .clone()
            .unwrap_or_default();
        if urls.len() > MAX_RETURN_URLS {
            return Err(ApiError::validation(format!(
                "allowedResourceOauth2ReturnUrls lists over {MAX_RETURN_URLS} URLs"
            )));
        }
        for url in &urls {
            check_url("allowedResourceOauth2ReturnUrls", url)
                .map_err(|e| ApiError::validation(e.0))?;
        }
        Ok(urls)
    }

    pub(crate) fn create_workload(&self, input: WorkloadInput) -> Result<Response, ApiError> {
        let urls = Self::checked(&input)?;
        let name = input.name;
        let now = self.now();
        let row = WorkloadRow {
            name: name.clone(),
            return_urls: urls.clone(),
            created_at: now,
            updated_at: now,
        };
        let mut workloads = self.workloads.write().unwrap_or_else(|p| p.into_inner());
        let conflict = || ApiError::conflict(format!("workload identity `{name}` already exists"));
        if workloads.contains_key(&name) {
            return Err(conflict());
        }
        if !self.store.create_workload(&row).map_err(internal)? {
            return Err(conflict());
        }
        let workload = Arc::new(Workload {
            allowed_return_urls: urls,
            jwt: self.created_jwt.clone(),
            created: Some((now, now)),
        });
        workloads.insert(name.clone(), workload.clone());
        drop(workloads);
        tracing::info!(target: "airlock::identity", workload = %name, "workload identity created");
        Ok(self.describe(&name, &workload))
    }

    pub(crate) fn get_workload(&self, input: NameInput) -> Result<Response, ApiError> {
        let workload = self.workload(&input.name)?;
        Ok(self.describe(&input.name, &workload))
    }

    pub(crate) fn update_workload(&self, input: WorkloadInput) -> Result<Response, ApiError> {
        let urls = Self::checked(&input)?;
        let name = input.name;
        let mut workloads = self.workloads.write().unwrap_or_else(|p| p.into_inner());
        let Some(current) = workloads.get(&name) else {
            return Err(ApiError::not_found(format!(
                "workload identity `{name}` does not exist"
            )));
        };
        let Some((created, _)) = current.created else {
            return Err(ApiError::validation(format!(
                "workload identity `{name}` is defined in the configuration file; change it there"
            )));
        };
        let now = self.now();
        if !self
            .store
            .update_workload(&name, &urls, now)
            .map_err(internal)?
        {
            return Err(internal(format!("workload `{name}` is not in the store")));
        }
        let workload = Arc::new(Workload {
            allowed_return_urls: urls,
            jwt: self.created_jwt.clone(),
            created: Some((created, now)),
        });
        workloads.insert(name.clone(), workload.clone());
        drop(workloads);
        Ok(self.describe(&name, &workload))
    }
}
