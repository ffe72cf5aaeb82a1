//! Declares an OAuth grant; the host adds the token, the tool never sees it.

use airlock_tool::{Error, Tool};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The tool.
pub struct GithubIssues;

/// Input of `github-issues`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// How many issues to return, 1 to 100 (default 20).
    #[serde(default = "default_limit")]
    pub limit: u8,
}

fn default_limit() -> u8 {
    20
}

/// Output of `github-issues`.
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct Output {
    /// The issues, newest first.
    pub issues: Vec<Issue>,
}

/// One issue.
#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Issue {
    /// Issue number within its repository.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Web address.
    pub html_url: String,
    /// `owner/name` of the repository.
    #[serde(default)]
    pub repository: Option<String>,
}

/// GitHub's issue object, the fields used.
#[derive(Debug, Deserialize)]
pub struct ApiIssue {
    number: u64,
    title: String,
    html_url: String,
    #[serde(default)]
    repository: Option<ApiRepo>,
}

#[derive(Debug, Deserialize)]
struct ApiRepo {
    full_name: String,
}

/// Map GitHub's answer to the output.
pub fn issues(api: Vec<ApiIssue>) -> Output {
    Output {
        issues: api
            .into_iter()
            .map(|i| Issue {
                number: i.number,
                title: i.title,
                html_url: i.html_url,
                repository: i.repository.map(|r| r.full_name),
            })
            .collect(),
    }
}

impl Tool for GithubIssues {
    type Input = Input;
    type Output = Output;

    #[cfg(target_arch = "wasm32")]
    fn call(input: Input) -> Result<Output, Error> {
        if !(1..=100).contains(&input.limit) {
            return Err(Error::InvalidInput(format!("limit is {}; use 1 to 100", input.limit)));
        }
        let url = format!("https://api.github.com/issues?filter=assigned&state=open&sort=created&per_page={}", input.limit);
        let response = airlock_tool::http::get(
            &url,
            &[("accept", "application/vnd.github+json"), ("user-agent", "airlock-github-issues")],
        )?;
        match response.status {
            200 => Ok(issues(response.json()?)),
            401 | 403 => Err(Error::Upstream(format!("GitHub refused the request ({})", response.status))),
            s => Err(Error::Upstream(format!("GitHub answered {s}"))),
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn call(_: Input) -> Result<Output, Error> {
        Err(Error::Failed("runs only as a component".into()))
    }
}

airlock_tool::export_tool!(GithubIssues);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_maps_github_json() {
        let api: Vec<ApiIssue> = serde_json::from_str(
            r#"[{"number": 7, "title": "Bug", "html_url": "https://github.com/o/r/issues/7", "repository": {"full_name": "o/r"}, "extra": 1}]"#,
        )
        .unwrap();
        assert_eq!(
            issues(api).issues,
            vec![Issue { number: 7, title: "Bug".into(), html_url: "https://github.com/o/r/issues/7".into(), repository: Some("o/r".into()) }]
        );
    }
}
