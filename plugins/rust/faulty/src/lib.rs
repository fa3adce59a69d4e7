//! Test enricher for the host's fault tests. What it does is chosen per
//! event by the event's value, so one instance can misbehave on one batch
//! and behave on the next:
//!
//! - `loop`: spin forever (the host's deadline must stop it)
//! - `memory`: allocate until allocation fails (the memory limit must hold)
//! - `panic`: panic with the message "faulty plugin panicked on purpose"
//! - `fail`: return an error for this event
//! - `file` / `socket` / `env`: try to read `/etc/passwd` or create a file,
//!   connect a TCP socket, read the environment; emit what happened
//! - `log`: log through the host and print to stdout / stderr
//! - `count`: emit how many events this instance has seen (fresh instance = 1)
//! - `sleep`: sleep 30 s, then emit `slept`
//! - `clock`: emit `wall_ms=<wall clock> slept_ms=<monotonic time a 1 s sleep took>`
//! - `many`: emit 100 records of 64 KiB each
//! - `huge`: emit one record of 2 MiB
//! - `shout`: write 10 MiB to stderr, in lines of 1 KiB, then emit `shouted`
//! - `bigkey`: look up a 1 MiB key in pond `p`, then emit `looked`
//! - anything else: forwarded unchanged to output 0
//!
//! Config `{"fail_init": true}` makes `init` fail.

use std::hint::black_box;
use weir_guest::{Emitter, Enricher, Event};

#[derive(serde::Deserialize, Default)]
struct Config {
    #[serde(default)]
    fail_init: bool,
}

struct Faulty {
    seen: u64,
}

fn file_access() -> String {
    let read = std::fs::read("/etc/passwd").map(|b| b.len());
    let create = std::fs::write("weir-escape.txt", b"x");
    let list = std::fs::read_dir(".").map(|d| d.count());
    format!("read={read:?} create={create:?} list={list:?}")
}

fn socket_access() -> String {
    let tcp = std::net::TcpStream::connect("127.0.0.1:80").map(|_| ());
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").map(|_| ());
    format!("tcp={tcp:?} udp={udp:?}")
}

fn env_access() -> String {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let home = std::env::var("HOME");
    let args: Vec<String> = std::env::args().collect();
    format!("vars={} home={home:?} args={}", vars.len(), args.len())
}

fn clock() -> String {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let started = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(1));
    format!(
        "wall_ms={wall} slept_ms={}",
        started.elapsed().as_millis()
    )
}

fn reply(out: &mut Emitter, key: &[u8], text: &str) -> Result<(), String> {
    out.emit(0, key, text.as_bytes());
    Ok(())
}

impl Enricher for Faulty {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = weir_guest::parse_config(config)?;
        if config.fail_init {
            return Err("init refused by config".to_string());
        }
        Ok(Faulty { seen: 0 })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Emitter) -> Result<(), String> {
        self.seen += 1;
        match event.value() {
            b"loop" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            b"memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            b"panic" => panic!("faulty plugin panicked on purpose"),
            b"fail" => Err(format!("event {} refused on purpose", event.index())),
            b"file" => reply(out, b"file", &file_access()),
            b"socket" => reply(out, b"socket", &socket_access()),
            b"env" => reply(out, b"env", &env_access()),
            b"log" => {
                weir_guest::log::info("hello from the faulty plugin");
                println!("stdout line from the faulty plugin");
                eprintln!("stderr line from the faulty plugin");
                reply(out, b"log", "logged")
            }
            b"count" => reply(out, b"count", &self.seen.to_string()),
            b"sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                reply(out, b"sleep", "slept")
            }
            b"clock" => reply(out, b"clock", &clock()),
            b"many" => {
                let value = vec![b'm'; 64 << 10];
                for _ in 0..100 {
                    out.emit(0, b"many", &value);
                }
                Ok(())
            }
            b"shout" => {
                let line = "s".repeat(1023);
                for _ in 0..10 << 10 {
                    eprintln!("{line}");
                }
                reply(out, b"shout", "shouted")
            }
            b"bigkey" => {
                black_box(weir_guest::lookup("p", &vec![b'k'; 1 << 20]));
                reply(out, b"bigkey", "looked")
            }
            b"huge" => {
                out.emit(0, b"huge", &vec![b'h'; 2 << 20]);
                Ok(())
            }
            _ => {
                out.forward(0, event);
                Ok(())
            }
        }
    }
}

weir_guest::enricher!(Faulty);
