//! What the start benches share: a server started with its stored tools,
//! without a compile cache, with a cold one and a warm one, beside a floor
//! (reading and hashing the same content), over several rounds.

use std::path::Path;
use std::time::{Duration, Instant};

use airlock_server::ServeConfig;

/// The median of `v`.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Start a server `rounds` times each way from `config(cache)` (every cache
/// under `caches`), asserting it serves `tools`; print the medians beside
/// `floor`'s, under `title`, with `floor_label` for the floor.
pub async fn measure<F, Fut>(
    title: &str,
    floor_label: &str,
    tools: usize,
    rounds: usize,
    caches: &Path,
    mut floor: F,
    config: impl Fn(Option<&Path>) -> ServeConfig,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Duration>,
{
    let (mut floors, mut none, mut cold, mut warm) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        floors.push(floor().await);
        let cache = caches.join(format!("cache-{round}"));
        for (runs, cache) in [
            (&mut none, None),
            (&mut cold, Some(cache.as_path())),
            (&mut warm, Some(cache.as_path())),
        ] {
            let started = Instant::now();
            let s = airlock_server::start(config(cache), None).await.unwrap();
            runs.push(started.elapsed());
            assert_eq!(s.tools, tools);
            s.shutdown().await;
        }
        eprintln!(
            "round {round}: {floor_label} {:?}, no cache {:?}, cold {:?}, warm {:?}",
            floors[round], none[round], cold[round], warm[round]
        );
    }
    println!("{title} (median of {rounds}):");
    println!("  {floor_label:<29}{:>10.1?}", median(floors));
    println!("  no compile cache             {:>10.1?}", median(none));
    println!("  cold compile cache           {:>10.1?}", median(cold));
    println!("  warm compile cache           {:>10.1?}", median(warm));
}
