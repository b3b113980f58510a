//! Close codes, each for its reason. pusher-js reads the range: 4000–4099 never reconnect, 4100–4199 reconnect
//! after backing off, 4200–4299 reconnect at once, 4300–4399 are other errors (pusher-js does not reconnect).
//! A close is always preceded by a `pusher:error` frame with the same code, as the protocol's servers do, so a
//! client that cannot read close codes learns the reason too.

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// 4001: no app has this key.
    UnknownApp,
    /// 4003: the app is disabled.
    AppDisabled,
    /// 4004: the app has its maximum of connections on this node.
    OverConnectionQuota,
    /// 4005: the path is not `/app/{key}`.
    PathNotFound,
    /// 4006: the `protocol` parameter is not a number.
    InvalidVersionFormat,
    /// 4007: the `protocol` version is not supported (Herald speaks 5 to 7).
    UnsupportedProtocol,
    /// 4008: no `protocol` parameter.
    NoProtocol,
    /// 4009: unauthorized: a sign-in that failed, a foreign origin, or the app terminated the user's connections.
    Unauthorized,
    /// 4100: over capacity: the server is full, or the client did not keep up with its messages (a slow
    /// consumer), or a history read it needed failed; reconnect after backing off.
    OverCapacity,
    /// 4200: reconnect at once (the server is shutting down).
    Reconnect,
    /// 4201: no pong came after the server's ping.
    PongNotReceived,
    /// 4301: the client sent client events faster than the app allows.
    ClientEventRate,
}

impl Close {
    /// The close code.
    pub fn code(self) -> u16 {
        match self {
            Close::UnknownApp => 4001,
            Close::AppDisabled => 4003,
            Close::OverConnectionQuota => 4004,
            Close::PathNotFound => 4005,
            Close::InvalidVersionFormat => 4006,
            Close::UnsupportedProtocol => 4007,
            Close::NoProtocol => 4008,
            Close::Unauthorized => 4009,
            Close::OverCapacity => 4100,
            Close::Reconnect => 4200,
            Close::PongNotReceived => 4201,
            Close::ClientEventRate => 4301,
        }
    }

    /// The close frame's reason (at most 123 bytes, as a close frame allows).
    pub fn reason(self) -> &'static str {
        match self {
            Close::UnknownApp => "no app has this key",
            Close::AppDisabled => "the app is disabled",
            Close::OverConnectionQuota => "the app has its maximum of connections",
            Close::PathNotFound => "path not found: connect to /app/{key}",
            Close::InvalidVersionFormat => "the protocol version is not a number",
            Close::UnsupportedProtocol => "unsupported protocol version: speak 7",
            Close::NoProtocol => "no protocol version given",
            Close::Unauthorized => "unauthorized",
            Close::OverCapacity => "over capacity: reconnect after a pause",
            Close::Reconnect => "reconnect",
            Close::PongNotReceived => "pong reply not received",
            Close::ClientEventRate => "client event rate limit exceeded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Close; 12] = [
        Close::UnknownApp,
        Close::AppDisabled,
        Close::OverConnectionQuota,
        Close::PathNotFound,
        Close::InvalidVersionFormat,
        Close::UnsupportedProtocol,
        Close::NoProtocol,
        Close::Unauthorized,
        Close::OverCapacity,
        Close::Reconnect,
        Close::PongNotReceived,
        Close::ClientEventRate,
    ];

    #[test]
    fn each_code_is_in_the_range_that_tells_a_client_what_to_do() {
        let never_retry = [4001, 4003, 4004, 4005, 4006, 4007, 4008, 4009];
        for close in ALL {
            let code = close.code();
            let expected = match close {
                Close::OverCapacity => (4100..4200).contains(&code),
                Close::Reconnect | Close::PongNotReceived => (4200..4300).contains(&code),
                Close::ClientEventRate => (4300..4400).contains(&code),
                _ => never_retry.contains(&code),
            };
            assert!(expected, "{close:?} has {code}");
            assert!(close.reason().len() <= 123, "{close:?}'s reason fits a close frame");
        }
    }
}
