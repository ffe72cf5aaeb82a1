//! Calls one declared API without credentials.

use std::collections::BTreeMap;

use airlock_tool::{Error, Tool};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The tool.
pub struct ExchangeRates;

/// Input of `exchange-rates`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Amount in `from`.
    pub amount: f64,
    /// ISO 4217 code, e.g. `EUR`.
    pub from: String,
    /// ISO 4217 code, e.g. `USD`.
    pub to: String,
}

/// Output of `exchange-rates`.
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct Output {
    /// The amount converted.
    pub amount: f64,
    /// Currency of `amount`.
    pub currency: String,
    /// Units of `to` per unit of `from`.
    pub rate: f64,
    /// The reference date of the rate (YYYY-MM-DD).
    pub date: String,
}

/// The API's answer.
#[derive(Debug, Deserialize)]
pub struct Latest {
    /// Reference date.
    pub date: String,
    /// Rates per currency.
    pub rates: BTreeMap<String, f64>,
}

/// Check a currency code: three ASCII letters, upper-cased.
pub fn currency(code: &str) -> Result<String, Error> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(code.to_ascii_uppercase())
    } else {
        Err(Error::InvalidInput(format!("`{code}` is not a currency code; use three letters such as EUR")))
    }
}

/// Turn the API's answer into the output.
pub fn convert(input_amount: f64, to: &str, latest: Latest) -> Result<Output, Error> {
    let rate = *latest
        .rates
        .get(to)
        .ok_or_else(|| Error::Upstream(format!("the API has no rate for {to}")))?;
    Ok(Output { amount: (input_amount * rate * 100.0).round() / 100.0, currency: to.to_string(), rate, date: latest.date })
}

impl Tool for ExchangeRates {
    type Input = Input;
    type Output = Output;

    #[cfg(target_arch = "wasm32")]
    fn call(input: Input) -> Result<Output, Error> {
        let (from, to) = (currency(&input.from)?, currency(&input.to)?);
        if !input.amount.is_finite() || input.amount < 0.0 {
            return Err(Error::InvalidInput("amount must be a finite number, zero or more".into()));
        }
        let url = format!("https://api.frankfurter.dev/v1/latest?base={from}&symbols={to}");
        let response = airlock_tool::http::get(&url, &[("accept", "application/json")])?;
        if response.status != 200 {
            return Err(Error::Upstream(format!("the rates API answered {}", response.status)));
        }
        convert(input.amount, &to, response.json()?)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn call(_: Input) -> Result<Output, Error> {
        Err(Error::Failed("runs only as a component".into()))
    }
}

airlock_tool::export_tool!(ExchangeRates);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_normalises_and_rejects() {
        assert_eq!(currency("usd").unwrap(), "USD");
        assert!(matches!(currency("US"), Err(Error::InvalidInput(_))));
        assert!(matches!(currency("U$D"), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn convert_applies_rate_and_reports_missing() {
        let latest = Latest { date: "2026-11-27".into(), rates: [("USD".to_string(), 1.25)].into() };
        let out = convert(10.0, "USD", latest).unwrap();
        assert_eq!(out, Output { amount: 12.5, currency: "USD".into(), rate: 1.25, date: "2026-11-27".into() });
        let latest = Latest { date: "d".into(), rates: BTreeMap::new() };
        assert!(matches!(convert(1.0, "JPY", latest), Err(Error::Upstream(_))));
    }
}
