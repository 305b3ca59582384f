//! acevisor's logs: one line per decision, nothing while nothing changes. Its own test binary,
//! so the captured subscriber can be the global one.

mod tree;

use std::time::Duration;

use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use tree::{Tree, VPN1, config, full};

const SEC: Duration = Duration::from_secs(1);

/// Log lines written by the tree, captured in memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(start_paused = true)]
async fn quiet_polls_log_nothing_and_decisions_log_a_line() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    // Global, in a test binary of its own: a thread-local default would race with tracing's
    // callsite-interest cache when other tests run on other threads.
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber of this binary");
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", 2, "")).await;
    tree.wait("pool", 20 * SEC, |s| full(s, VPN1, 2, 30001))
        .await;
    assert!(logs.text().contains("engine ready"), "the start is logged");
    let before = logs.text().len();
    // Ten minutes of 5 s VPN polls and 2 s health probes with nothing changing.
    tree.hold(10 * 60 * SEC, |s| full(s, VPN1, 2, 30001), "steady pool")
        .await;
    let quiet = logs.text()[before..].to_string();
    assert!(
        quiet.is_empty(),
        "log lines while nothing changed:\n{quiet}"
    );
    let victim = tree
        .snap()
        .await
        .engines
        .iter()
        .find(|e| !e.forwarded)
        .unwrap()
        .name
        .clone();
    tree.mem.exit(&victim, 1);
    tree.wait("replaced", 60 * SEC, |s| {
        s.counters.engines_lost == 1 && full(s, VPN1, 2, 30001)
    })
    .await;
    let decision = logs.text()[before..].to_string();
    assert!(decision.contains("engine container died"), "{decision}");
    assert!(decision.contains("creating engine"), "{decision}");
}
