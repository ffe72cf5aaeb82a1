//! Runs COUNT calls of the hostile fixture's `fetch` to a plain host or to an
//! OAuth-covered host whose token is cached, for instruction counts under
//! `valgrind --tool=callgrind` (repeatable where wall-clock time is noisy).
//! The difference per call between two counts is the broker's added work.
//!
//! `cargo run --release -p airlock-runtime --example broker_calls -- plain|oauth COUNT`

use airlock_runtime::Runtime;
use airlock_tests::bench::{BROKERED, PLAIN, answering_server, policy_to};
use airlock_tests::peers::{PeerOptions, Peers};
use airlock_tests::user;

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "plain".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let peers = Peers::start(PeerOptions::default()).await;
        let origin = answering_server().await;
        // One slot: valgrind cannot map the default pool's reservations.
        let runtime = Runtime::builder()
            .max_concurrent_calls(1)
            .max_memory_mib(64)
            .token_source(peers.broker.clone())
            .build()
            .unwrap();
        let hostile = runtime
            .load(&airlock_tests::tool_bytes("hostile"), &policy_to(&origin))
            .unwrap();
        let (brokered, plain) = (BROKERED, PLAIN);
        let alice = user("alice");
        // The same setup for both kinds: one consent, one brokered and one plain call.
        let report = runtime.invoke_as(&hostile, Some(&alice), brokered).await;
        let consent = report.outcome.consent().cloned().expect("consent first");
        peers.approve(&consent, &alice).await;
        for input in [brokered, plain] {
            let r = runtime.invoke_as(&hostile, Some(&alice), input).await;
            assert_eq!(r.outcome.unwrap_output()["results"][0]["status"], 200);
        }
        let input = if kind == "oauth" { brokered } else { plain };
        for _ in 0..count {
            let r = runtime.invoke_as(&hostile, Some(&alice), input).await;
            assert_eq!(r.outcome.unwrap_output()["results"][0]["status"], 200);
        }
        eprintln!("{count} {kind} calls done");
    });
}
