//! What a stored grant covers. Shared by token requests (`vault`) and
//! consent completion (`session`), so neither imports the other for it.

/// Whether a grant of `have` covers every scope in `want`.
pub(crate) fn covers(have: &[String], want: &[String]) -> bool {
    want.iter().all(|w| have.contains(w))
}

/// What a stored grant covers: the scopes asked for at consent and those the
/// provider says it granted. Providers separate scopes with spaces (RFC 6749)
/// or commas (GitHub), and some answer with expanded names (Google's `email`
/// as `.../auth/userinfo.email`); keeping the asked names means the same
/// request is covered next time instead of starting a new consent. A grant
/// the user narrowed at the provider shows up as the upstream's 403, never as
/// a token with more power than the provider gave.
pub(crate) fn granted(said: Option<&str>, asked: &[String]) -> Vec<String> {
    let mut all: Vec<String> = asked.to_vec();
    if let Some(said) = said {
        all.extend(
            said.split([' ', ','])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn granted_scopes_accept_commas_spaces_and_expanded_names() {
        // GitHub: comma-separated.
        let g = granted(Some("repo,read:user"), &v(&["read:user", "repo"]));
        assert!(covers(&g, &v(&["read:user", "repo"])), "{g:?}");
        assert_eq!(g, v(&["read:user", "repo"]));
        // RFC 6749: space-separated, and "repo, user" with both.
        assert!(covers(
            &granted(Some("a b"), &v(&["a", "b"])),
            &v(&["a", "b"])
        ));
        assert!(covers(&granted(Some("a, b"), &v(&["a"])), &v(&["b"])));
        // Google: `email` answered as its URL; the asked name still covers.
        let g = granted(
            Some("openid https://www.googleapis.com/auth/userinfo.email"),
            &v(&["email", "openid"]),
        );
        assert!(covers(&g, &v(&["email", "openid"])), "{g:?}");
        // Silent providers: what was asked.
        assert_eq!(granted(None, &v(&["repo"])), v(&["repo"]));
    }
}
