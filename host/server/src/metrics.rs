//! Prometheus metrics, served on their own listener: calls by tool and
//! outcome, call duration, brokered requests, consent prompts, pool use.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
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

    /// One tool's handles, resolved once (each `with_label_values` hashes
    /// its labels and takes a lock).
    pub(crate) fn for_tool(&self, tool: &str) -> ToolMetrics {
        ToolMetrics {
            tool: tool.to_string(),
            outcomes: Default::default(),
            duration: self.duration.with_label_values(&[tool]),
        }
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A finished call's outcomes, as `airlock_calls_total` labels them.
pub(crate) const OUTCOMES: [&str; 5] =
    ["ok", "authorization_required", "busy", "credential_echoed", "failed"];

/// A tool's call counters (one per outcome, in [`OUTCOMES`]' order, each
/// made at its first use so that no outcome shows before it happens) and
/// its duration histogram.
pub(crate) struct ToolMetrics {
    tool: String,
    outcomes: [OnceLock<IntCounter>; OUTCOMES.len()],
    pub(crate) duration: Histogram,
}

impl ToolMetrics {
    /// The counter of `outcome`, one of [`OUTCOMES`].
    pub(crate) fn calls(&self, metrics: &Metrics, outcome: &str) -> Option<&IntCounter> {
        let i = OUTCOMES.iter().position(|o| *o == outcome)?;
        Some(self.outcomes[i].get_or_init(|| {
            metrics.calls.with_label_values(&[&self.tool, OUTCOMES[i]])
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tools_resolved_handles_count_in_the_series_the_metrics_listener_shows() {
        let metrics = Metrics::new(4);
        let handles = metrics.for_tool("text-stats");
        assert!(!metrics.render().contains("airlock_calls_total{"), "no outcome before it happens");
        handles.calls(&metrics, "ok").unwrap().inc();
        handles.calls(&metrics, "ok").unwrap().inc();
        handles.calls(&metrics, "credential_echoed").unwrap().inc();
        handles.duration.observe(0.002);
        assert!(handles.calls(&metrics, "no-such-outcome").is_none());
        let text = metrics.render();
        assert!(text.contains(r#"airlock_calls_total{outcome="ok",tool="text-stats"} 2"#), "{text}");
        assert!(text.contains(r#"airlock_calls_total{outcome="credential_echoed",tool="text-stats"} 1"#), "{text}");
        assert_eq!(text.matches("airlock_calls_total{").count(), 2, "{text}");
        assert!(text.contains(r#"airlock_call_duration_seconds_count{tool="text-stats"} 1"#), "{text}");
    }
}
