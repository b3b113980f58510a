//! One webhook endpoint: where requests go, how they are written and signed, and which events it hears of.
//!
//! Endpoints come from the configuration's `[[webhooks]]` (per namespace, through channel patterns, in Herald's
//! format or Pusher's) and from the Pusher protocol, which registers each app's webhooks at run time.

use herald_proto::ChannelName;

use super::client::Target;
use super::format::Format;
use super::WebhookError;
use crate::auth::patterns::Pattern;
use crate::config::{ConfigError, WebhookSettings};
use crate::hub::{EventKind, LifecycleEvent};

/// An endpoint.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Its name: metrics' label, and where the cluster keeps its position in the log (unique).
    pub(crate) name: String,
    pub(crate) target: Target,
    pub(crate) format: Format,
    /// The events it hears of; empty: every one.
    events: Vec<EventKind>,
    /// The channels it hears of; empty: every one.
    channels: Vec<Pattern>,
    /// Only channels whose name starts with this (a Pusher app's).
    prefix: String,
}

impl Endpoint {
    /// The endpoint `[[webhooks]]` number `i` configures; a value that cannot be used is refused naming its key.
    pub(crate) fn configured(i: usize, settings: &WebhookSettings) -> Result<Self, ConfigError> {
        let key = |field: &str| format!("webhooks[{i}].{field}");
        let target = Target::parse(&settings.url).map_err(|e| ConfigError::invalid(key("url"), e))?;
        let channels = settings
            .channels
            .iter()
            .map(|p| Pattern::new(p).map_err(|e| ConfigError::invalid(key("channels"), e.to_string())))
            .collect::<Result<_, _>>()?;
        let events = settings.events.iter().filter_map(|name| EventKind::from_name(name)).collect();
        let format = match settings.format.as_str() {
            "pusher" => Format::Pusher {
                key: settings.key.clone().unwrap_or_default(),
                secret: settings.secret.clone(),
                channel_prefix: String::new(),
            },
            _ => Format::Herald { secret: settings.secret.clone() },
        };
        let name = settings.name.clone().unwrap_or_else(|| format!("webhook-{i}"));
        Ok(Self { name, target, format, events, channels, prefix: String::new() })
    }

    /// The endpoint number `i` of a Pusher app.
    pub(crate) fn pusher(app: &super::PusherApp, i: usize, hook: &super::PusherWebhook) -> Result<Self, WebhookError> {
        let target = Target::parse(&hook.url).map_err(|e| WebhookError::Url(hook.url.clone(), e))?;
        let format = Format::Pusher {
            key: app.key.clone(),
            secret: app.secret.clone(),
            channel_prefix: app.channel_prefix.clone(),
        };
        let name = format!("pusher:{}:{i}", app.app_id);
        Ok(Self {
            name,
            target,
            format,
            events: hook.events.clone(),
            channels: Vec::new(),
            prefix: app.channel_prefix.clone(),
        })
    }

    /// Whether it hears of `kind` on `channel`.
    pub(crate) fn wants(&self, kind: EventKind, channel: &ChannelName) -> bool {
        (self.events.is_empty() || self.events.contains(&kind))
            && channel.as_str().starts_with(&self.prefix)
            && (self.channels.is_empty() || crate::auth::patterns::any_matches(&self.channels, channel))
    }

    /// Whether it hears of `event`.
    pub(crate) fn hears(&self, event: &LifecycleEvent) -> bool {
        self.wants(event.kind, &event.channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(events: &[&str], channels: &[&str]) -> WebhookSettings {
        WebhookSettings {
            name: None,
            url: "http://127.0.0.1:9/hooks".into(),
            format: "herald".into(),
            secret: "0123456789abcdef".into(),
            key: None,
            events: events.iter().map(|e| e.to_string()).collect(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn an_endpoint_hears_its_events_on_its_channels_only() {
        let every = Endpoint::configured(0, &settings(&[], &[])).unwrap();
        assert_eq!(every.name, "webhook-0");
        assert!(every.wants(EventKind::CacheMiss, &ch("anything")));
        let chat = Endpoint::configured(1, &settings(&["member_added", "member_removed"], &["chat:*"])).unwrap();
        assert!(chat.wants(EventKind::MemberAdded, &ch("chat:lobby")));
        assert!(!chat.wants(EventKind::ChannelOccupied, &ch("chat:lobby")));
        assert!(!chat.wants(EventKind::MemberAdded, &ch("orders:1")));
        let bad = Endpoint::configured(2, &settings(&[], &["a b"])).unwrap_err().to_string();
        assert!(bad.starts_with("webhooks[2].channels"), "{bad}");
    }
}
