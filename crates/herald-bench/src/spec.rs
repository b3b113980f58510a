//! What a load is made of: the server and how to talk to it, the subscribers and their channels. Shared by
//! the coordinating process and its workers, which receive their part as JSON.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// The server under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Target {
    /// Herald's API (`docs/API.md`), through `herald-client`.
    Herald,
    /// Nchan's locations as in `bench/nchan/nginx.conf.template`: `POST /pub/<ch>`, `/sub/<ch>`, `/poll/<ch>`.
    Nchan,
    /// Herald's Pusher Channels protocol (`docs/PUSHER.md`), with the bench app of `pusher.rs`.
    HeraldPusher,
    /// Soketi, a self-hosted Pusher server, with the same app.
    Soketi,
    /// `herald-bench floor`: Herald's API served with nothing but one write per socket (`floor.rs`).
    Floor,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Herald => "herald",
            Self::Nchan => "nchan",
            Self::HeraldPusher => "herald-pusher",
            Self::Soketi => "soketi",
            Self::Floor => "floor",
        }
    }
}

/// Which client the subscribers are: the fan-out figures must not depend on it (`bench/crosscheck.sh`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Generator {
    /// `herald-client` for Herald (envelopes parsed), its raw escape hatches for Nchan (`feed.rs`).
    #[default]
    HeraldClient,
    /// WebSocket frames over a bare `TcpStream`, the payload found by a scan, for every server (`plain_ws.rs`).
    Plain,
}

impl Generator {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::HeraldClient => "herald-client",
            Self::Plain => "plain",
        }
    }
}

/// How subscribers receive messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Transport {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// Long polling, a new request after every answer.
    LongPoll,
    /// Short polling at `--poll-interval-ms`.
    Poll,
}

impl Transport {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
            Self::LongPoll => "long-poll",
            Self::Poll => "poll",
        }
    }
}

/// Which channel each subscriber follows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Layout {
    /// Everyone on one channel: fan-out.
    One,
    /// A channel per subscriber.
    Each,
    /// `channels` channels, subscribers spread over them by a Zipf law of exponent 1 (channel `k` has about
    /// `1/(k+1)` of the first one's audience), as popular and quiet topics mix in real traffic.
    Zipf {
        /// How many channels.
        channels: u32,
    },
    /// `channels` channels, subscriber `i` on channel `i % channels`: the same audience on every channel, so
    /// that a per-channel effect (a history replayed, say) hits every subscriber alike.
    Even {
        /// How many channels.
        channels: u32,
    },
}

impl std::str::FromStr for Layout {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "one" => Ok(Self::One),
            "each" => Ok(Self::Each),
            _ => {
                let (kind, channels) = text.split_once(':').unwrap_or((text, ""));
                match (kind, channels.parse::<u32>()) {
                    ("zipf", Ok(channels)) if channels > 0 => Ok(Self::Zipf { channels }),
                    ("even", Ok(channels)) if channels > 0 => Ok(Self::Even { channels }),
                    _ => Err(format!("expected one, each, zipf:<channels> or even:<channels>, not {text:?}")),
                }
            }
        }
    }
}

impl Layout {
    /// How many channels `subscribers` subscribers use (never 0, so that publishing without subscribers works).
    pub(crate) fn channels(self, subscribers: u32) -> u32 {
        match self {
            Self::One => 1,
            Self::Each => subscribers.max(1),
            Self::Zipf { channels } | Self::Even { channels } => channels,
        }
    }

    /// The channel of every subscriber, in index order (the same in every process).
    pub(crate) fn assign(self, subscribers: u32) -> Vec<u32> {
        match self {
            Self::One => vec![0; subscribers as usize],
            Self::Each => (0..subscribers).collect(),
            Self::Zipf { channels } => {
                let cumulative = zipf_cumulative(channels);
                (0..subscribers).map(|i| zipf_rank(&cumulative, spread(i))).collect()
            }
            Self::Even { channels } => (0..subscribers).map(|i| i % channels).collect(),
        }
    }

    pub(crate) fn describe(self) -> String {
        match self {
            Self::One => "one channel".into(),
            Self::Each => "a channel each".into(),
            Self::Zipf { channels } => format!("{channels} channels, Zipf"),
            Self::Even { channels } => format!("{channels} channels, even"),
        }
    }
}

/// A well-mixed number in [0, 1) for `index` (splitmix64), so that the Zipf draw is the same in every process.
fn spread(index: u32) -> f64 {
    let mut z = u64::from(index).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The Zipf(1) cumulative weights of ranks 0 … channels-1, normalised to end at 1.
fn zipf_cumulative(channels: u32) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cumulative: Vec<f64> = (1..=channels)
        .map(|k| {
            acc += 1.0 / f64::from(k);
            acc
        })
        .collect();
    cumulative.iter_mut().for_each(|c| *c /= acc);
    cumulative
}

/// The rank (0 = most popular) whose cumulative weight first exceeds `u`.
fn zipf_rank(cumulative: &[f64], u: f64) -> u32 {
    let rank = cumulative.partition_point(|&c| c <= u);
    rank.min(cumulative.len() - 1) as u32
}

/// A channel's name: unique to the run, so that no history of an earlier run is replayed. Valid for both
/// servers (Herald's alphabet, Nchan's `[\w:.-]+` location).
pub(crate) fn channel_name(run: &str, channel: u32) -> String {
    format!("bench-{run}-{channel}")
}

/// The local address of connection `index` of group `group` (subscribers 1, publishers 2): spread over
/// `127.<group>.1.1`–`127.<group>.250.250`, so that no address runs short of ephemeral ports.
pub(crate) fn local_ip(group: u8, index: u32) -> IpAddr {
    let third = 1 + (index / 250) % 250;
    let fourth = 1 + index % 250;
    IpAddr::V4(Ipv4Addr::new(127, group, third as u8, fourth as u8))
}

/// Which of `nodes` nodes subscriber (or publisher) `index` talks to: round-robin, so that with a layout of
/// `C` channels (`C` not a multiple of the nodes) every channel has subscribers on every node.
pub(crate) fn node_of(index: u32, nodes: usize) -> usize {
    index as usize % nodes.max(1)
}

/// One worker's share of the subscribers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    pub(crate) target: Target,
    /// The server's nodes: subscriber `i` connects to `urls[i % urls.len()]`.
    pub(crate) urls: Vec<String>,
    /// Which client the subscribers are.
    #[serde(default)]
    pub(crate) generator: Generator,
    pub(crate) transport: Transport,
    pub(crate) poll_interval_ms: u64,
    pub(crate) run: String,
    pub(crate) layout: Layout,
    /// Subscribers of the whole load (the layout depends on it).
    pub(crate) subscribers: u32,
    /// This worker's first subscriber index and how many it opens.
    pub(crate) first: u32,
    pub(crate) count: u32,
    /// Publisher connections (each numbers its own messages).
    pub(crate) publishers: u32,
    /// Subscriptions being opened at once at most.
    pub(crate) connect_concurrency: u32,
    /// Resume a subscription that ends, from its cursor, as `herald.js` does (Herald only), and keep when each
    /// message arrived (see `recovery.rs`); otherwise an ended subscription stays ended.
    #[serde(default)]
    pub(crate) resume: bool,
    /// `baseline[channel][publisher]`: what was published before the subscribers opened, which they do not
    /// expect (empty: nothing).
    #[serde(default)]
    pub(crate) baseline: Vec<Vec<u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_parse_from_their_names() {
        assert_eq!("one".parse::<Layout>(), Ok(Layout::One));
        assert_eq!("each".parse::<Layout>(), Ok(Layout::Each));
        assert_eq!("zipf:100".parse::<Layout>(), Ok(Layout::Zipf { channels: 100 }));
        assert_eq!("even:50".parse::<Layout>(), Ok(Layout::Even { channels: 50 }));
        assert!("zipf:0".parse::<Layout>().is_err());
        assert!("even:".parse::<Layout>().is_err());
        assert!("many".parse::<Layout>().is_err());
    }

    #[test]
    fn fan_out_puts_everyone_on_channel_0_and_each_gives_everyone_their_own() {
        assert_eq!(Layout::One.assign(5), [0; 5]);
        assert_eq!(Layout::Each.assign(5), [0, 1, 2, 3, 4]);
        assert_eq!((Layout::One.channels(0), Layout::Each.channels(0)), (1, 1));
    }

    #[test]
    fn even_gives_every_channel_the_same_audience() {
        let layout = Layout::Even { channels: 50 };
        let mut audience = [0u32; 50];
        for channel in layout.assign(5_000) {
            audience[channel as usize] += 1;
        }
        assert!(audience.iter().all(|&n| n == 100), "{audience:?}");
    }

    #[test]
    fn zipf_gives_the_first_channel_about_twice_the_second_and_uses_all() {
        let layout = Layout::Zipf { channels: 10 };
        let mut audience = [0u32; 10];
        for channel in layout.assign(100_000) {
            audience[channel as usize] += 1;
        }
        let ratio = f64::from(audience[0]) / f64::from(audience[1]);
        assert!((1.8..2.2).contains(&ratio), "{audience:?}");
        assert!(audience.iter().all(|&n| n > 0), "{audience:?}");
    }

    #[test]
    fn local_addresses_stay_in_loopback_and_differ_between_neighbours() {
        let a = local_ip(1, 0);
        let b = local_ip(1, 1);
        assert_ne!(a, b);
        for i in [0, 249, 250, 62_499, 62_500, 1_000_000] {
            let IpAddr::V4(ip) = local_ip(1, i) else { panic!() };
            assert!(ip.is_loopback() && ip.octets()[2] > 0 && ip.octets()[3] > 0, "{ip}");
        }
    }

    #[test]
    fn with_channels_not_a_multiple_of_the_nodes_every_channel_has_subscribers_on_every_node() {
        let layout = Layout::Even { channels: 1_000 };
        let mut nodes = vec![[false; 3]; 1_000];
        for (index, channel) in layout.assign(3_000).into_iter().enumerate() {
            nodes[channel as usize][node_of(index as u32, 3)] = true;
        }
        assert!(nodes.iter().all(|n| n.iter().all(|&on| on)));
        assert_eq!(node_of(7, 1), 0);
    }

    #[test]
    fn channel_names_are_valid_herald_names() {
        let name = channel_name("k3x9", 17);
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{name}");
    }
}
