//! What a Kubernetes API failure means for the caller: retry it, or stop
//! and say which class of problem it is.

use crate::error::class::ExitClass;

/// Whether retrying may help: 5xx, 429, and failures to reach the server.
pub fn is_transient(e: &::kube::Error) -> bool {
    match e {
        ::kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) | ::kube::Error::ReadEvents(_) => {
            true
        }
        _ => false,
    }
}

/// The exit class an API failure suggests: 401/403 are permission, 404
/// and 409 say the state moved under us (retry later), other 4xx are bad
/// input, 5xx/429/unreachable are unavailability.
pub fn class_of(e: &::kube::Error) -> Option<ExitClass> {
    Some(match e {
        ::kube::Error::Api(s) => match s.code {
            401 | 403 => ExitClass::Permission,
            404 | 409 | 429 => ExitClass::Unavailable,
            400..=499 => ExitClass::Input,
            _ => ExitClass::Unavailable,
        },
        _ if is_transient(e) => ExitClass::Unavailable,
        _ => return None,
    })
}

/// The HTTP status of an API answer, if the failure was one.
pub fn status(e: &::kube::Error) -> Option<u16> {
    match e {
        ::kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> ::kube::Error {
        ::kube::Error::Api(
            ::kube::core::Status::failure("x", "X")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn classes_follow_the_answer() {
        assert_eq!(class_of(&api(403)), Some(ExitClass::Permission));
        assert_eq!(class_of(&api(422)), Some(ExitClass::Input));
        assert_eq!(class_of(&api(503)), Some(ExitClass::Unavailable));
        assert!(is_transient(&api(429)) && !is_transient(&api(404)));
        assert_eq!(status(&api(409)), Some(409));
    }
}
