//! The control-plane calls the host makes when it accepts a tool: each tool
//! gets a workload identity of its own, so that consents belong to it.
//! Created identities are stored; those in the configuration file are not
//! changed through the API (the file is their source).

use std::sync::Arc;

use crate::config::{check_url, valid_workload_name};
use crate::error::{IdentityServiceError, internal};
use crate::model::{NameInput, WorkloadDescription, WorkloadInput};
use crate::service::{Service, Workload};
use crate::store::WorkloadRow;

/// How many return URLs one workload identity may list.
const MAX_RETURN_URLS: usize = 50;

impl Service {
    fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:bedrock-agentcore:us-east-1:000000000000:workload-identity-directory/default/workload-identity/{name}"
        )
    }

    fn describe(&self, name: &str, w: &Workload) -> WorkloadDescription {
        let (created, updated) = w.created.unwrap_or((0, 0));
        WorkloadDescription {
            name: name.to_string(),
            arn: self.arn(name),
            allowed_return_urls: w.allowed_return_urls.clone(),
            created,
            updated,
        }
    }

    fn checked(input: &WorkloadInput) -> Result<Vec<String>, IdentityServiceError> {
        if !valid_workload_name(&input.name) {
            return Err(IdentityServiceError::validation(
                "name must be 3-255 of A-Z a-z 0-9 _ . -",
            ));
        }
        let urls = input
            .allowed_resource_oauth2_return_urls
            .clone()
            .unwrap_or_default();
        if urls.len() > MAX_RETURN_URLS {
            return Err(IdentityServiceError::validation(format!(
                "allowedResourceOauth2ReturnUrls lists over {MAX_RETURN_URLS} URLs"
            )));
        }
        for url in &urls {
            check_url("allowedResourceOauth2ReturnUrls", url)
                .map_err(|e| IdentityServiceError::validation(e.message))?;
        }
        Ok(urls)
    }

    pub(crate) fn create_workload(
        &self,
        input: WorkloadInput,
    ) -> Result<WorkloadDescription, IdentityServiceError> {
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
        let conflict =
            || IdentityServiceError::conflict(format!("workload identity `{name}` already exists"));
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

    pub(crate) fn get_workload(
        &self,
        input: NameInput,
    ) -> Result<WorkloadDescription, IdentityServiceError> {
        let workload = self.workload(&input.name)?;
        Ok(self.describe(&input.name, &workload))
    }

    pub(crate) fn update_workload(
        &self,
        input: WorkloadInput,
    ) -> Result<WorkloadDescription, IdentityServiceError> {
        let urls = Self::checked(&input)?;
        let name = input.name;
        let mut workloads = self.workloads.write().unwrap_or_else(|p| p.into_inner());
        let Some(current) = workloads.get(&name) else {
            return Err(IdentityServiceError::not_found(format!(
                "workload identity `{name}` does not exist"
            )));
        };
        let Some((created, _)) = current.created else {
            return Err(IdentityServiceError::validation(format!(
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
