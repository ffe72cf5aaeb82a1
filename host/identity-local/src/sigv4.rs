//! SigV4 verification of incoming calls, as AWS does it for restJson1 services.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The signing name the SDK uses for the data plane.
pub(crate) const SERVICE: &str = "bedrock-agentcore";
/// How far a request's date may be from the service's clock.
const MAX_SKEW_SECS: i64 = 15 * 60;

/// A verified signature's access key id.
#[derive(Debug)]
pub(crate) struct Signed {
    pub(crate) access_key_id: String,
}

/// Why a signature is refused (said to the caller; never includes the secret).
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) String);

/// Check the `Authorization` header of a request against `secret_for(access_key_id)`.
pub(crate) fn verify(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
    secret_for: impl Fn(&str) -> Option<String>,
) -> Result<Signed, Refused> {
    let refuse = |m: &str| Err(Refused(m.to_string()));
    let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return refuse("the request is not signed: SigV4 Authorization header missing");
    };
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return refuse("only AWS4-HMAC-SHA256 signatures are accepted");
    };
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return refuse(
            "the SigV4 Authorization header lacks Credential, SignedHeaders or Signature",
        );
    };
    let scope: Vec<&str> = credential.splitn(5, '/').collect();
    let [akid, day, region, service, terminal] = scope[..] else {
        return refuse("malformed SigV4 credential scope");
    };
    if service != SERVICE || terminal != "aws4_request" {
        return refuse("the credential scope names another service");
    }
    let Some(amz_date) = headers.get("x-amz-date").and_then(|v| v.to_str().ok()) else {
        return refuse("x-amz-date header missing");
    };
    let Some(when) = parse_amz_date(amz_date) else {
        return refuse("x-amz-date is not of the form YYYYMMDDTHHMMSSZ");
    };
    if !amz_date.starts_with(day) || day.len() != 8 {
        return refuse("the credential scope's date differs from x-amz-date");
    }
    if (now_unix - when).abs() > MAX_SKEW_SECS {
        return refuse(
            "the request's signing time is more than 15 minutes from the service's clock",
        );
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return refuse("host and x-amz-date must be signed");
    }
    let Some(secret) = secret_for(akid) else {
        return refuse("unknown access key id");
    };

    let payload_hash = hex::encode(Sha256::digest(body));
    if let Some(claimed) = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        && claimed != payload_hash
        && claimed != "UNSIGNED-PAYLOAD"
    {
        return refuse("x-amz-content-sha256 does not match the body");
    }
    let mut canonical = String::with_capacity(512);
    canonical.push_str(method);
    canonical.push('\n');
    canonical.push_str(&canonical_uri(raw_path));
    canonical.push('\n');
    canonical.push_str(&canonical_query(raw_query.unwrap_or("")));
    canonical.push('\n');
    for name in &names {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| collapse(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if values.is_empty() {
            return refuse("a signed header is missing from the request");
        }
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&values.join(","));
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(signed_headers);
    canonical.push('\n');
    canonical.push_str(&payload_hash);

    let scope = format!("{day}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(&secret, day, region, service);
    let Ok(claimed) = hex::decode(signature) else {
        return refuse("the signature is not hex");
    };
    let mut mac = HmacSha256::new_from_slice(&key).expect("any key length");
    mac.update(to_sign.as_bytes());
    mac.verify_slice(&claimed)
        .map_err(|_| Refused("the signature does not match".into()))?;
    Ok(Signed {
        access_key_id: akid.to_string(),
    })
}

fn signing_key(secret: &str, day: &str, region: &str, service: &str) -> Vec<u8> {
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    key
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn collapse(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Non-S3 services encode each path segment once more, as received.
fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".into();
    }
    raw_path
        .split('/')
        .map(|seg| percent_encoding::utf8_percent_encode(seg, UNRESERVED).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(raw: &str) -> String {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| {
            (
                percent_encoding::utf8_percent_encode(&k, UNRESERVED).to_string(),
                percent_encoding::utf8_percent_encode(&v, UNRESERVED).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `20261129T015003Z` as Unix seconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_parse() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
    }

    // AWS's published example (sigv4 test suite "get-vanilla"), with the service name ours.
    #[test]
    fn a_known_signature_verifies_and_a_changed_body_does_not() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let sign = |body: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert("host", "example.amazonaws.com".parse().unwrap());
            headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
            let payload = hex::encode(Sha256::digest(body));
            let canonical = format!(
                "POST\n/identities/oauth2/token\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{payload}"
            );
            let scope = format!("20150830/us-east-1/{SERVICE}/aws4_request");
            let to_sign = format!(
                "AWS4-HMAC-SHA256\n20150830T123600Z\n{scope}\n{}",
                hex::encode(Sha256::digest(canonical.as_bytes()))
            );
            let key = signing_key(secret, "20150830", "us-east-1", SERVICE);
            let sig = hex::encode(hmac(&key, to_sign.as_bytes()));
            headers.insert(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{scope}, SignedHeaders=host;x-amz-date, Signature={sig}")
                    .parse()
                    .unwrap(),
            );
            headers
        };
        let headers = sign(b"{}");
        let now = 1_440_938_160;
        let lookup = |id: &str| (id == "AKIDEXAMPLE").then(|| secret.to_string());
        let check = |body: &[u8], now: i64, secret_for: &dyn Fn(&str) -> Option<String>| {
            let path = "/identities/oauth2/token";
            verify("POST", path, None, &headers, body, now, secret_for)
        };
        assert!(check(b"{}", now, &lookup).is_ok());
        assert!(check(b"{\"x\":1}", now, &lookup).is_err());
        let e = check(b"{}", now + 3600, &lookup);
        assert!(e.unwrap_err().0.contains("15 minutes"));
        let e = check(b"{}", now, &|_| None);
        assert!(e.unwrap_err().0.contains("unknown access key"));
    }
}
