//! Limits of one call. A manifest may ask for less than the operator's
//! ceilings, never more.

use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// Limits of one call. In a manifest every field is optional and asks; in an
/// operator's policy they are the ceilings, and the values a tool gets when it
/// asks nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock deadline of the call, in milliseconds.
    pub timeout_ms: u64,
    /// Linear memory of the instance, in MiB.
    pub memory_mib: u64,
    /// Size of the JSON output, in KiB.
    pub output_kib: u64,
    /// Outgoing HTTP requests per call.
    pub max_requests: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 10_000,
            memory_mib: 64,
            output_kib: 1024,
            max_requests: 16,
        }
    }
}

/// What a manifest asks for; unset fields take the operator's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// See [`Limits::timeout_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// See [`Limits::memory_mib`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// See [`Limits::output_kib`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_kib: Option<u64>,
    /// See [`Limits::max_requests`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u64>,
}

/// Hard ceilings no policy can raise: they keep a typo from reserving the machine.
const MAX: Limits = Limits {
    timeout_ms: 300_000,
    memory_mib: 4096,
    output_kib: 65_536,
    max_requests: 1000,
};

impl Limits {
    /// Check each value is between 1 and its hard ceiling.
    pub fn validate(&self) -> Result<(), PolicyError> {
        check("timeout_ms", self.timeout_ms, MAX.timeout_ms)?;
        check("memory_mib", self.memory_mib, MAX.memory_mib)?;
        check("output_kib", self.output_kib, MAX.output_kib)?;
        check("max_requests", self.max_requests, MAX.max_requests)
    }

    /// The limits a tool gets: what it asked, capped by `self` (the ceilings).
    pub fn apply(&self, request: &LimitsRequest) -> Result<Limits, PolicyError> {
        let pick = |name, asked: Option<u64>, ceiling: u64| match asked {
            Some(0) => Err(PolicyError::InvalidLimit {
                name,
                value: 0,
                max: ceiling,
            }),
            Some(v) => Ok(v.min(ceiling)),
            None => Ok(ceiling),
        };
        Ok(Limits {
            timeout_ms: pick("timeout_ms", request.timeout_ms, self.timeout_ms)?,
            memory_mib: pick("memory_mib", request.memory_mib, self.memory_mib)?,
            output_kib: pick("output_kib", request.output_kib, self.output_kib)?,
            max_requests: pick("max_requests", request.max_requests, self.max_requests)?,
        })
    }
}

fn check(name: &'static str, value: u64, max: u64) -> Result<(), PolicyError> {
    if (1..=max).contains(&value) {
        Ok(())
    } else {
        Err(PolicyError::InvalidLimit { name, value, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_apply_caps_requests_at_ceiling() {
        let ceiling = Limits::default();
        let asked = LimitsRequest {
            timeout_ms: Some(1_000),
            memory_mib: Some(10_000),
            ..Default::default()
        };
        let got = ceiling.apply(&asked).unwrap();
        assert_eq!(got.timeout_ms, 1_000);
        assert_eq!(got.memory_mib, ceiling.memory_mib);
        assert_eq!(got.output_kib, ceiling.output_kib);
    }

    #[test]
    fn limits_zero_is_refused() {
        let asked = LimitsRequest {
            max_requests: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            Limits::default().apply(&asked),
            Err(PolicyError::InvalidLimit {
                name: "max_requests",
                ..
            })
        ));
        let bad = Limits {
            memory_mib: 1 << 20,
            ..Limits::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(PolicyError::InvalidLimit {
                name: "memory_mib",
                ..
            })
        ));
    }
}
