//! Errors as HTTP answers: `application/problem+json` (RFC 9457) with a fitting status.
//!
//! Owns: [`Problem`] and the mapping from [`CallError`] and a service's own error to a
//! status. Promises: a client learns what went wrong and whether to retry, but never the
//! cluster's internals (addresses, panics); those go to the gateway's log with the
//! request id.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use crate::error::{CallError, ErrorKind};
use crate::service::ErrorStatus;

/// An error answer.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) status: StatusCode,
    /// What happened, for the client.
    pub(super) detail: String,
    pub(super) service: Option<&'static str>,
    /// The service's own error value, when it has a shape other than `ServiceError`'s.
    pub(super) error: Option<Value>,
    /// `Allow`, for 405.
    pub(super) allow: Option<String>,
    /// The problem type a service's error names (`HttpError::problem_type`).
    pub(super) problem_type: Option<String>,
}

impl Problem {
    pub(super) fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            detail: detail.into(),
            service: None,
            error: None,
            allow: None,
            problem_type: None,
        }
    }

    pub(super) fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }

    pub(super) fn for_service(mut self, name: &'static str) -> Problem {
        self.service = Some(name);
        self
    }

    /// The answer, for the request at `instance` with id `request_id`.
    pub(super) fn into_response(self, instance: &str) -> Response<Full<Bytes>> {
        let mut body = json!({
            "type": self.problem_type.as_deref().unwrap_or("about:blank"),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "instance": instance,
        });
        if let Some(service) = self.service {
            body["service"] = service.into();
        }
        if let Some(error) = self.error {
            body["error"] = error;
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = Response::new(Full::new(Bytes::from(bytes)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(allow) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            headers.insert(header::ALLOW, allow);
        }
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The status of a [`ErrorKind`].
pub(super) fn status_of_kind(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The answer for a service's own error, given as JSON, with the status its type gives it
/// ([`crate::HttpError`]; `None` when the type has none).
///
/// A [`crate::ServiceError`] (`{"kind": ..., "message": ...}`) takes the status of its kind
/// and its message as the detail. Another error type takes its `HttpError` status, else 500,
/// with its value under `error` and its `message` field (if it has one) as the detail.
pub(super) fn from_service_error(
    service: &'static str,
    value: Value,
    status: Option<ErrorStatus>,
) -> Problem {
    let kind = value
        .get("kind")
        .cloned()
        .and_then(|k| serde_json::from_value::<ErrorKind>(k).ok());
    let message = value
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| value.as_str())
        .map(str::to_owned);
    match (kind, message) {
        (Some(kind), Some(message)) if value.as_object().is_some_and(|o| o.len() == 2) => {
            Problem::new(status_of_kind(kind), message).for_service(service)
        }
        (_, message) => {
            let code = status
                .as_ref()
                .and_then(|s| StatusCode::from_u16(s.status).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut p = Problem::new(
                code,
                message.unwrap_or_else(|| format!("service `{service}` returned an error")),
            )
            .for_service(service);
            p.problem_type = status.and_then(|s| s.problem_type);
            p.error = Some(value);
            p
        }
    }
}

/// The answer for a call that did not produce the service's own answer.
///
/// The detail says what happened without the cluster's addresses or a handler's panic
/// message; the caller logs the full error.
pub(super) fn from_call_error(service: &'static str, err: &CallError, attempts: u16) -> Problem {
    let tries = if attempts > 1 {
        format!(" (tried {attempts} times)")
    } else {
        String::new()
    };
    let (status, detail) = match err {
        CallError::BadArguments { reason, .. } => (StatusCode::BAD_REQUEST, reason.clone()),
        CallError::DeadlineExceeded { budget, .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "service `{service}` did not answer within the deadline of {}ms; a longer \
                 one can be asked for with the `x-colony-timeout` header",
                budget.as_micros().div_ceil(1000)
            ),
        ),
        CallError::Overloaded { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("service `{service}` is overloaded{tries}; retry later"),
        ),
        CallError::NoInstance { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("service `{service}` has no instance running{tries}; retry later"),
        ),
        CallError::Unreachable { .. }
        | CallError::Draining { .. }
        | CallError::UnknownService { .. }
        | CallError::VersionMismatch { .. }
        | CallError::ConnectionLost { .. }
        | CallError::Cancelled { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("service `{service}` has no instance that could answer{tries}; retry later"),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("service `{service}` failed while handling the request"),
        ),
    };
    Problem::new(status, detail).for_service(service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceError;

    #[test]
    fn service_errors_take_the_status_of_their_kind() {
        let err = serde_json::to_value(ServiceError::not_found("no sku a1")).expect("json");
        let p = from_service_error("shop::price", err, None);
        assert_eq!(p.status, StatusCode::NOT_FOUND);
        assert_eq!(p.detail, "no sku a1");
        assert!(p.error.is_none());

        let p = from_service_error("shop::price", json!("out of stock"), None);
        assert_eq!(p.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(p.detail, "out of stock");
        assert_eq!(p.error, Some(json!("out of stock")));
    }

    #[test]
    fn an_error_type_with_an_http_status_answers_with_it() {
        let status = ErrorStatus {
            status: 409,
            problem_type: Some("out-of-stock".to_owned()),
        };
        let value = json!({"OutOfStock": {"sku": "a1"}});
        let p = from_service_error("shop::price", value.clone(), Some(status));
        assert_eq!(p.status, StatusCode::CONFLICT);
        assert_eq!(p.error, Some(value));
        let body = p.into_response("/price/a1").into_body();
        let _ = body;
    }

    #[test]
    fn call_errors_hide_internals() {
        let err = CallError::Unreachable {
            service: "s".into(),
            addr: "10.0.0.7:7000".into(),
            reason: "refused".into(),
        };
        let p = from_call_error("s", &err, 3);
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!p.detail.contains("10.0.0.7"), "{}", p.detail);
        assert!(p.detail.contains("tried 3 times"), "{}", p.detail);

        let err = CallError::Internal {
            service: "s".into(),
            message: "panicked at src/secret.rs:12".into(),
        };
        let p = from_call_error("s", &err, 1);
        assert_eq!(p.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!p.detail.contains("secret"), "{}", p.detail);

        let err = CallError::DeadlineExceeded {
            service: "s".into(),
            budget: std::time::Duration::from_millis(250),
        };
        assert_eq!(
            from_call_error("s", &err, 1).status,
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn problems_are_problem_json_with_retry_after_when_retrying_helps() {
        let r = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy").into_response("/x");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
