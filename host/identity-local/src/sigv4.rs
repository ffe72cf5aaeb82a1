//! SigV4 verification of incoming calls: the signature is recomputed with
//! `aws-sigv4`, the code the AWS SDK signs with, over the received method,
//! path, query, signed headers and body, and compared in constant time. What
//! is checked by hand is only what a signer does not check: the credential
//! scope, the clock skew and that the caller is known.

use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::HeaderMap;
use subtle::ConstantTimeEq;

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
pub(crate) struct SigV4Error(pub(crate) String);

/// The parts of a SigV4 `Authorization` header.
struct Authorization<'a> {
    access_key_id: &'a str,
    day: &'a str,
    region: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, &'static str> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("only AWS4-HMAC-SHA256 signatures are accepted")?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
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
        return Err("the SigV4 Authorization header lacks Credential, SignedHeaders or Signature");
    };
    let scope: Vec<&str> = credential.splitn(5, '/').collect();
    let [access_key_id, day, region, service, "aws4_request"] = scope[..] else {
        return Err("malformed SigV4 credential scope");
    };
    if service != SERVICE {
        return Err("the credential scope names another service");
    }
    Ok(Authorization {
        access_key_id,
        day,
        region,
        signed_headers: signed_headers.split(';').collect(),
        signature,
    })
}

/// Check the `Authorization` header of a request against `secret_for(access_key_id)`.
/// `path_and_query` is as received (still percent-encoded).
pub(crate) fn verify(
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
    secret_for: impl Fn(&str) -> Option<String>,
) -> Result<Signed, SigV4Error> {
    let refuse = |m: &str| SigV4Error(m.to_string());
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refuse("the request is not signed: SigV4 Authorization header missing"))?;
    let auth = parse_authorization(auth).map_err(refuse)?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refuse("x-amz-date header missing"))?;
    let when = parse_amz_date(amz_date)
        .ok_or_else(|| refuse("x-amz-date is not of the form YYYYMMDDTHHMMSSZ"))?;
    if auth.day.len() != 8 || !amz_date.starts_with(auth.day) {
        return Err(refuse(
            "the credential scope's date differs from x-amz-date",
        ));
    }
    if (now_unix - when).abs() > MAX_SKEW_SECS {
        return Err(refuse(
            "the request's signing time is more than 15 minutes from the service's clock",
        ));
    }
    if !auth.signed_headers.contains(&"host") || !auth.signed_headers.contains(&"x-amz-date") {
        return Err(refuse("host and x-amz-date must be signed"));
    }
    let secret = secret_for(auth.access_key_id).ok_or_else(|| refuse("unknown access key id"))?;

    // Exactly the signed headers, every value, as received.
    let mut signed = Vec::new();
    for name in &auth.signed_headers {
        let mut values = headers.get_all(*name).iter().peekable();
        if values.peek().is_none() {
            return Err(refuse("a signed header is missing from the request"));
        }
        for value in values {
            let value = value
                .to_str()
                .map_err(|_| refuse("a signed header's value is not visible ASCII"))?;
            signed.push((*name, value));
        }
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refuse("host header missing"))?;
    let uri = format!("http://{host}{path_and_query}");
    let identity: Identity =
        Credentials::new(auth.access_key_id, secret, None, None, "caller").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(SERVICE)
        .time(UNIX_EPOCH + Duration::from_secs(when as u64))
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SigV4Error(format!("cannot verify: {e}")))?
        .into();
    let request = SignableRequest::new(method, uri, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| SigV4Error(format!("the request cannot be canonicalized: {e}")))?;
    let expected = sign(request, &params)
        .map_err(|e| SigV4Error(format!("the request cannot be canonicalized: {e}")))?
        .into_parts()
        .1;
    if !bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        return Err(refuse("the signature does not match"));
    }
    Ok(Signed {
        access_key_id: auth.access_key_id.to_string(),
    })
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

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const NOW: i64 = 1_440_938_160; // 20150830T123600Z

    #[test]
    fn amz_dates_parse() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(NOW));
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
    }

    /// Sign as the AWS SDK does (the same crate, its default settings), with
    /// `extra` headers, and return the headers the request carries.
    fn signed(path_and_query: &str, extra: &[(&str, &str)], body: &[u8]) -> HeaderMap {
        let identity: Identity = Credentials::new("AKIDEXAMPLE", SECRET, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(SERVICE)
            .time(UNIX_EPOCH + Duration::from_secs(NOW as u64))
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let mut headers: Vec<(&str, &str)> = vec![("host", "127.0.0.1:8790")];
        headers.extend_from_slice(extra);
        let uri = format!("http://127.0.0.1:8790{path_and_query}");
        let request = SignableRequest::new(
            "POST",
            uri,
            headers.clone().into_iter(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        for (k, v) in instructions.headers() {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    fn lookup(id: &str) -> Option<String> {
        (id == "AKIDEXAMPLE").then(|| SECRET.to_string())
    }

    #[test]
    fn requests_signed_like_the_sdk_verify_whatever_their_path_query_and_headers() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "/identities/oauth2/token",
                &[("content-type", "application/json")],
            ),
            // Percent-encoded and non-ASCII path segments, an encoded slash.
            ("/identities/a%20b/c%2Fd/%C3%BC/%7Euser", &[]),
            // Repeated keys, empty values, encoded characters, unsorted order.
            (
                "/identities/x?b=2&a=1&a=0&empty=&flag&sp=%20y&plus=a%2Bb",
                &[],
            ),
            // Headers: spaces to collapse, an empty value, one name twice.
            (
                "/identities/y",
                &[
                    ("x-custom", "  spaced    out  value "),
                    ("x-empty", ""),
                    ("x-twice", "one"),
                    ("x-twice", "two"),
                    ("x-amz-user-agent", "aws-sdk-rust/1.83 os/linux"),
                ],
            ),
        ];
        for (path, extra) in cases {
            let headers = signed(path, extra, b"{\"a\":1}");
            let ok = verify("POST", path, &headers, b"{\"a\":1}", NOW, lookup);
            assert!(ok.is_ok(), "{path} {extra:?}: {:?}", ok.err());
            // Any change to what was signed breaks it.
            let e = verify("POST", path, &headers, b"{\"a\":2}", NOW, lookup).unwrap_err();
            assert!(e.0.contains("does not match"), "{}", e.0);
            let e = verify("PUT", path, &headers, b"{\"a\":1}", NOW, lookup).unwrap_err();
            assert!(e.0.contains("does not match"), "{}", e.0);
            let other = format!("{path}{}z=1", if path.contains('?') { "&" } else { "?" });
            assert!(verify("POST", &other, &headers, b"{\"a\":1}", NOW, lookup).is_err());
        }
        // A signed header's value changed after signing.
        let mut headers = signed("/identities/y", &[("x-custom", "a")], b"");
        headers.insert("x-custom", "b".parse().unwrap());
        assert!(verify("POST", "/identities/y", &headers, b"", NOW, lookup).is_err());
    }

    #[test]
    fn time_scope_and_callers_are_checked() {
        let headers = signed("/identities/oauth2/token", &[], b"{}");
        let check = |now: i64, secret_for: &dyn Fn(&str) -> Option<String>| {
            verify(
                "POST",
                "/identities/oauth2/token",
                &headers,
                b"{}",
                now,
                secret_for,
            )
        };
        assert!(check(NOW, &lookup).is_ok());
        let e = check(NOW + 3600, &lookup);
        assert!(e.unwrap_err().0.contains("15 minutes"));
        let e = check(NOW, &|_| None);
        assert!(e.unwrap_err().0.contains("unknown access key"));
        let e = check(NOW, &|_| Some("another-secret".into()));
        assert!(e.unwrap_err().0.contains("does not match"));
        let mut other_service = headers.clone();
        let auth = headers["authorization"]
            .to_str()
            .unwrap()
            .replace(SERVICE, "s3");
        other_service.insert("authorization", auth.parse().unwrap());
        let e = verify(
            "POST",
            "/identities/oauth2/token",
            &other_service,
            b"{}",
            NOW,
            lookup,
        );
        assert!(e.unwrap_err().0.contains("another service"));
    }
}
