fn main() { airlock_tool::print_schemas::<github_issues::GithubIssues>() }
