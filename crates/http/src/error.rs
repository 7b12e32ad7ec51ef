//! One error type for every handler, mapped to Nomad's status codes and plain-text bodies.

use http::StatusCode;

/// A failed request: the status and the plain-text message that becomes the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body text (no trailing newline).
    pub message: String,
}

impl ApiError {
    /// An error with an explicit status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// `400` with `message`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// `405 Invalid method`.
    pub fn invalid_method() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Invalid method")
    }

    /// `501 Invalid method`: the endpoint exists but this kind of agent does not serve it.
    pub fn wrong_agent_kind() -> ApiError {
        ApiError::new(StatusCode::NOT_IMPLEMENTED, "Invalid method")
    }

    /// `403 Permission denied`.
    pub fn permission_denied() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Permission denied")
    }

    /// An uncoded error message, classified by Nomad's rules (spec §0.3): an `RPC Error:: <code>,`
    /// prefix gives the code, a `Permission denied` or `ACL token not found` suffix gives 403 with
    /// just that text, and anything else is a 500 with the message verbatim.
    pub fn from_message(message: impl Into<String>) -> ApiError {
        let message = message.into();
        if let Some(rest) = message.strip_prefix("RPC Error:: ")
            && let Some((code, text)) = rest.split_once(',')
            && let Ok(code) = code.parse::<u16>()
            && let Ok(status) = StatusCode::from_u16(code)
        {
            return ApiError::new(status, text);
        }
        for suffix in ["Permission denied", "ACL token not found"] {
            if message.ends_with(suffix) {
                return ApiError::new(StatusCode::FORBIDDEN, suffix);
            }
        }
        if message == "Filter expression cannot be used with other filter parameters" {
            return ApiError::bad_request(message);
        }
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// go-multierror's text for several errors: `N errors occurred:\n\t* a\n\t* b\n\n`.
pub fn multi_error(errors: &[String]) -> String {
    let noun = if errors.len() == 1 { "error" } else { "errors" };
    let lines: Vec<String> = errors.iter().map(|e| format!("* {e}")).collect();
    format!(
        "{} {noun} occurred:\n\t{}\n\n",
        errors.len(),
        lines.join("\n\t")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multierror_format() {
        assert_eq!(multi_error(&["a".into()]), "1 error occurred:\n\t* a\n\n");
        assert_eq!(
            multi_error(&["a".into(), "b".into()]),
            "2 errors occurred:\n\t* a\n\t* b\n\n"
        );
    }

    #[test]
    fn classifies_like_nomad() {
        let cases = [
            (
                "RPC Error:: 404,Unknown node \"x\"",
                404,
                "Unknown node \"x\"",
            ),
            ("rpc error: Permission denied", 403, "Permission denied"),
            ("failed: ACL token not found", 403, "ACL token not found"),
            (
                "unknown Nomad server s.global",
                500,
                "unknown Nomad server s.global",
            ),
            ("RPC Error:: abc,x", 500, "RPC Error:: abc,x"),
        ];
        for (input, status, body) in cases {
            let e = ApiError::from_message(input);
            assert_eq!(
                (e.status.as_u16(), e.message.as_str()),
                (status, body),
                "{input}"
            );
        }
    }
}
