//! Prometheus metrics, served on their own listener: calls by tool and
//! outcome, call duration, brokered requests, consent prompts, pool use.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) calls: IntCounterVec,
    pub(crate) duration: HistogramVec,
    pub(crate) brokered: IntCounterVec,
    pub(crate) consents: IntCounterVec,
    pub(crate) redactions: IntCounterVec,
    pub(crate) in_use: IntGauge,
}

impl Metrics {
    pub(crate) fn new(pool_size: u32) -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("a valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let calls = counter(
            "airlock_calls_total",
            "Tool calls by tool and outcome.",
            &["tool", "outcome"],
        );
        let brokered = counter(
            "airlock_brokered_requests_total",
            "Outgoing requests that carried a brokered token, by provider.",
            &["provider"],
        );
        let consents = counter(
            "airlock_consent_prompts_total",
            "Calls that ended asking the user to consent, by tool and provider.",
            &["tool", "provider"],
        );
        let redactions = counter(
            "airlock_redactions_total",
            "Echoed credentials overwritten before a tool read them (or in its output and logs), by tool and host.",
            &["tool", "host"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new("airlock_call_duration_seconds", "Tool call duration.").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["tool"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("registered once");
        let in_use = gauge("airlock_pool_in_use", "Call slots in use.");
        gauge("airlock_pool_size", "Call slots in all.").set(i64::from(pool_size));
        Metrics {
            registry,
            calls,
            duration,
            brokered,
            consents,
            redactions,
            in_use,
        }
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
