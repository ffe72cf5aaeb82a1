//! `dev-resource-server ISSUER [AUDIENCE]`: the tests' stand-in for
//! api.github.com as a process, for the local stack (scripts/stack.sh). It
//! accepts the provider's JWT access tokens for AUDIENCE with the `repo`
//! scope and answers `/issues` with the token's user's issue. Development only.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(issuer) = args.next() else {
        eprintln!("usage: dev-resource-server ISSUER [AUDIENCE] (PORT from the environment)");
        std::process::exit(2);
    };
    let audience = args
        .next()
        .unwrap_or_else(|| airlock_tests::peers::RESOURCE.to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let server = airlock_tests::resource::ResourceServer::start(&issuer, &audience).await;
        println!("{}", serde_json::json!({ "resource": server.origin() }));
        let _ = tokio::signal::ctrl_c().await;
    });
}
