//! Herald's disk workload on redb and on fjall: publish-shaped appends under each fsync policy, range reads of
//! old history, bytes on disk per message, and the time to open a store that was killed (`kill -9`) while full.
//!
//! `store-compare STORE DIR append N` writes N messages (200-byte bodies on 100 channels) three ways and prints
//! publishes/s: `always-1` (one durable commit per message), `always-32` (32 messages per durable commit: group
//! commit), `interval` (every message its own commit, durable once a second). `fill N` writes N messages in
//! batches and then sleeps, to be killed; `open` times opening what is there and reading every channel's last
//! offset, then range reads of 100 old messages.

use std::path::Path;
use std::time::{Duration, Instant};

const CHANNELS: u64 = 100;

fn key(channel: u64, offset: u64) -> Vec<u8> {
    let mut k = format!("orders:{channel}").into_bytes();
    k.push(0);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn body(i: u64) -> Vec<u8> {
    let mut v = format!("{{\"order\":{i},\"status\":\"preparing\",\"eta\":\"12:30\"}}").into_bytes();
    v.resize(200, b' ');
    v
}

trait Store {
    /// Appends `batch` (channel, offset) messages in one commit, durable or not.
    fn commit(&mut self, batch: &[(u64, u64)], durable: bool);
    /// Makes everything so far durable.
    fn sync(&mut self);
    /// The last offset of `channel`.
    fn last(&self, channel: u64) -> u64;
    /// Reads `n` messages of `channel` from `from`; returns how many.
    fn range(&self, channel: u64, from: u64, n: usize) -> usize;
}

mod redb_store {
    use redb::{Database, Durability, TableDefinition};

    const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
    pub struct S(pub Database);

    pub fn open(dir: &std::path::Path) -> S {
        std::fs::create_dir_all(dir).unwrap();
        S(Database::create(dir.join("herald.redb")).unwrap())
    }

    impl super::Store for S {
        fn commit(&mut self, batch: &[(u64, u64)], durable: bool) {
            let mut tx = self.0.begin_write().unwrap();
            tx.set_durability(if durable { Durability::Immediate } else { Durability::None });
            {
                let mut t = tx.open_table(MESSAGES).unwrap();
                for &(c, o) in batch {
                    t.insert(&super::key(c, o)[..], &super::body(o)[..]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        fn sync(&mut self) {
            self.commit(&[], true);
        }
        fn last(&self, channel: u64) -> u64 {
            let tx = self.0.begin_read().unwrap();
            let t = tx.open_table(MESSAGES).unwrap();
            let (lo, hi) = (super::key(channel, 0), super::key(channel, u64::MAX));
            let last = t.range(&lo[..]..&hi[..]).unwrap().next_back().map(|e| {
                let k = e.unwrap().0.value().to_vec();
                u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap())
            });
            last.unwrap_or(0)
        }
        fn range(&self, channel: u64, from: u64, n: usize) -> usize {
            let tx = self.0.begin_read().unwrap();
            let t = tx.open_table(MESSAGES).unwrap();
            let (lo, hi) = (super::key(channel, from), super::key(channel, u64::MAX));
            t.range(&lo[..]..&hi[..]).unwrap().take(n).map(|e| e.unwrap().1.value().len()).filter(|l| *l > 0).count()
        }
    }
}

mod fjall_store {
    use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

    pub struct S(pub Keyspace, pub PartitionHandle);

    pub fn open(dir: &std::path::Path) -> S {
        // No background fsync: the program decides when (as Herald's writer would).
        let ks = Config::new(dir).fsync_ms(None).open().unwrap();
        let p = ks.open_partition("messages", PartitionCreateOptions::default()).unwrap();
        S(ks, p)
    }

    impl super::Store for S {
        fn commit(&mut self, batch: &[(u64, u64)], durable: bool) {
            let mut b = self.0.batch();
            if durable {
                b = b.durability(Some(PersistMode::SyncAll));
            }
            for &(c, o) in batch {
                b.insert(&self.1, super::key(c, o), super::body(o));
            }
            b.commit().unwrap();
        }
        fn sync(&mut self) {
            self.0.persist(PersistMode::SyncAll).unwrap();
        }
        fn last(&self, channel: u64) -> u64 {
            let (lo, hi) = (super::key(channel, 0), super::key(channel, u64::MAX));
            let last = self.1.range(lo..hi).next_back().map(|e| {
                let k = e.unwrap().0.to_vec();
                u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap())
            });
            last.unwrap_or(0)
        }
        fn range(&self, channel: u64, from: u64, n: usize) -> usize {
            let (lo, hi) = (super::key(channel, from), super::key(channel, u64::MAX));
            self.1.range(lo..hi).take(n).map(|e| e.unwrap().1.len()).filter(|l| *l > 0).count()
        }
    }
}

fn open(store: &str, dir: &Path) -> Box<dyn Store> {
    match store {
        "redb" => Box::new(redb_store::open(dir)),
        "fjall" => Box::new(fjall_store::open(dir)),
        other => panic!("unknown store {other}"),
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dir_bytes(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (store, dir, mode) = (&args[1], Path::new(&args[2]), args[3].as_str());
    let n: u64 = args.get(4).map_or(0, |n| n.parse().unwrap());
    let next = |i: u64| (i % CHANNELS, i / CHANNELS + 1);
    match mode {
        "append" => {
            for policy in ["always-1", "always-32", "interval"] {
                let path = dir.join(policy);
                let _ = std::fs::remove_dir_all(&path);
                let mut s = open(store, &path);
                let count = if policy == "always-1" { n / 10 } else { n };
                let started = Instant::now();
                let mut synced = Instant::now();
                let mut i = 0;
                while i < count {
                    let size = if policy == "always-32" { 32 } else { 1 };
                    let batch: Vec<_> = (i..(i + size).min(count)).map(next).collect();
                    s.commit(&batch, policy != "interval");
                    if policy == "interval" && synced.elapsed() >= Duration::from_secs(1) {
                        s.sync();
                        synced = Instant::now();
                    }
                    i += size;
                }
                s.sync();
                let secs = started.elapsed().as_secs_f64();
                drop(s);
                let bytes = dir_bytes(&path);
                println!(
                    "{store} {policy}: {count} messages in {secs:.2} s = {:.0}/s; {:.0} bytes on disk per message",
                    count as f64 / secs,
                    bytes as f64 / count as f64
                );
            }
        }
        "fill" => {
            let _ = std::fs::remove_dir_all(dir);
            let mut s = open(store, dir);
            let mut i = 0;
            while i < n {
                let batch: Vec<_> = (i..(i + 1000).min(n)).map(next).collect();
                s.commit(&batch, false);
                i += 1000;
            }
            s.sync();
            println!("filled {}; {:.0} bytes on disk per message", n, dir_bytes(dir) as f64 / n as f64);
            // Commits after the last sync, as a running server has, then wait for the kill.
            for j in 0..50 {
                s.commit(&[next(n + j)], false);
            }
            println!("ready");
            std::thread::sleep(Duration::from_secs(3600));
        }
        "open" => {
            let started = Instant::now();
            let s = open(store, dir);
            let opened = started.elapsed();
            let heads: u64 = (0..CHANNELS).map(|c| s.last(c)).sum();
            let recovered = started.elapsed();
            let reads = 1000;
            let t = Instant::now();
            let mut got = 0;
            for r in 0..reads {
                got += s.range(r % CHANNELS, 1 + (r * 7) % 50, 100);
            }
            let per_read = t.elapsed() / reads as u32;
            println!(
                "{store} open after kill -9: open {:.0} ms, open + every channel's head {:.0} ms ({heads} messages \
                 counted); old-history read of 100 messages: {:.0} µs ({got} read)",
                opened.as_secs_f64() * 1e3,
                recovered.as_secs_f64() * 1e3,
                per_read.as_secs_f64() * 1e6
            );
        }
        _ => panic!("modes: append N, fill N, open"),
    }
}
