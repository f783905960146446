//! Through home routers: the seed behind one NAT, the listener behind
//! another, a public peer between them; `chorus play` as users run it,
//! told only the public peer. For each kind of NAT, how long until the
//! listener's connection to the seed is up (by the path it took) and until
//! its first audio, in ms and in round trips of the profile.
//!
//! ```text
//!  home A: host ── router (NAT) ══ delay line ══ public ══ delay line ══ router (NAT) ── host :home B
//! ```
//!
//! Network namespaces (root only), the routers' NATs in nftables as in
//! `tests/nat.rs`; each "══" is a [`DelayLine`]: two TUN devices and a
//! thread per direction holding each packet as the profile says (the
//! kernel here has no netem). Each line carries half the profile's round
//! trip, so host to host is the profile's RTT, as is the path through the
//! public peer's relay. The cases:
//!
//! - `cone`: both routers keep a host's port for every destination; the
//!   listener gets a punched connection;
//! - `symmetric`: a random port per destination on both; it gets a relay;
//! - `upnp`: the seed's router runs a UPnP IGD (Debian's `miniupnpd`), the
//!   seed maps its port; the listener dials it there.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chorus_streamer::delayline::DelayLine;
use chorus_streamer::netem::LinkProfile;
use indicatif::ProgressBar;
use tokio::io::AsyncBufReadExt;

use super::report::{Recorder, Unit};
use super::scenarios::Settings;
use super::swarm::Track;

const PUBLIC_IP: &str = "100.200.0.1";

/// How long the public peer and the seed may take to be ready.
const READY_LIMIT: Duration = Duration::from_secs(120);

/// A kind of home router, and the path a listener should get through it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Case {
    Cone,
    Symmetric,
    Upnp,
}

impl Case {
    const ALL: [Case; 3] = [Case::Cone, Case::Symmetric, Case::Upnp];

    fn name(self) -> &'static str {
        match self {
            Case::Cone => "cone",
            Case::Symmetric => "symmetric",
            Case::Upnp => "upnp",
        }
    }

    /// The path `chorus play` should report for the seed.
    fn path(self) -> &'static str {
        match self {
            Case::Cone => "punched",
            Case::Symmetric => "relayed",
            Case::Upnp => "mapped",
        }
    }
}

/// Whether this scenario can run here, and if not, why.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("the nat scenario makes network namespaces: run it as root".into());
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version"), ("miniupnpd", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            return Some(format!(
                "the nat scenario needs `{tool}` (scripts/setup installs iproute2, nftables and miniupnpd)"
            ));
        }
    }
    None
}

/// A namespace of the run's own, removed when dropped.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Result<Self> {
        run("ip", &["netns", "add", &name])?;
        let ns = Self(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn exec(&self, program: &str, args: &[&str]) -> Result<()> {
        let mut all = vec!["netns", "exec", &self.0, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn command(&self, program: &Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program).kill_on_drop(true);
        c
    }

    /// Loads nftables `rules` into the namespace.
    fn nft(&self, rules: &str) -> Result<()> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft")?;
        child.stdin.take().context("nft's stdin")?.write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft in {}: {}", self.0, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out =
        Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The small internet of one case; everything goes when it is dropped
/// (processes first, then lines and namespaces).
struct Internet {
    /// Daemons (miniupnpd), killed on drop.
    daemons: Vec<tokio::process::Child>,
    public: Netns,
    /// (router, host) of home A (the listener's) and home B (the seed's).
    homes: Vec<(Netns, Netns)>,
    _lines: Vec<DelayLine>,
    dir: tempfile::TempDir,
}

/// Each of the two lines carries half the path's round trip, jitter and
/// loss, at the path's rate.
fn half(p: &LinkProfile) -> LinkProfile {
    LinkProfile { rtt: p.rtt / 2, jitter: p.jitter / 2, loss: p.loss / 2.0, ..p.clone() }
}

async fn build(case: Case, profile: &LinkProfile, n: usize, seed: u64) -> Result<Internet> {
    // Names of at most 15 bytes, unique to this run, profile and case.
    let p = LinkProfile::all().iter().position(|x| x.name == profile.name).unwrap_or(9);
    let tag = format!("{}{p}{n}", std::process::id() % 100_000);
    let public = Netns::new(format!("chb-pub{tag}"))?;
    public.exec("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
    let dir = tempfile::tempdir()?;
    let mut homes = Vec::new();
    let mut lines = Vec::new();
    let mut daemons = Vec::new();
    for h in 1..=2usize {
        let router = Netns::new(format!("chb-r{h}{tag}"))?;
        let host = Netns::new(format!("chb-h{h}{tag}"))?;
        // The router's uplink: a delay line to the public namespace.
        let (wan, port) = (format!("chw{h}{tag}"), format!("chp{h}{tag}"));
        let line = DelayLine::new(&wan, &port, &half(profile), seed ^ h as u64)
            .context("making TUN devices (needs /dev/net/tun)")?;
        lines.push(line);
        run("ip", &["link", "set", &wan, "netns", &router.0])?;
        router.ip(&["link", "set", &wan, "name", "wan"])?;
        run("ip", &["link", "set", &port, "netns", &public.0])?;
        let router_ip = format!("100.200.0.{}", h + 1);
        public.ip(&["addr", "add", PUBLIC_IP, "peer", &router_ip, "dev", &port])?;
        public.ip(&["link", "set", &port, "up"])?;
        router.ip(&["addr", "add", &router_ip, "peer", PUBLIC_IP, "dev", "wan"])?;
        router.ip(&["link", "set", "wan", "up"])?;
        router.ip(&["route", "add", "default", "via", PUBLIC_IP])?;
        // The home LAN.
        run(
            "ip",
            &[
                "link", "add", "lan", "netns", &router.0, "type", "veth", "peer", "name", "eth0",
                "netns", &host.0,
            ],
        )?;
        router.ip(&["addr", "add", &format!("192.168.{h}.1/24"), "dev", "lan"])?;
        router.ip(&["link", "set", "lan", "up"])?;
        host.ip(&["addr", "add", &format!("192.168.{h}.2/24"), "dev", "eth0"])?;
        host.ip(&["link", "set", "eth0", "up"])?;
        host.ip(&["route", "add", "default", "via", &format!("192.168.{h}.1")])?;
        router.exec("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        let masquerade = if case == Case::Symmetric { "masquerade random" } else { "masquerade" };
        let upnp = case == Case::Upnp && h == 2;
        router.nft(&nat_rules(masquerade, upnp))?;
        if upnp {
            daemons.push(miniupnpd(&router, dir.path(), h).await?);
        }
        homes.push((router, host));
    }
    Ok(Internet { daemons, public, homes, _lines: lines, dir })
}

/// A home router's rules (`lab/home-router.nft`, as in tests/nat.rs) and,
/// with `upnp`, the chains miniupnpd fills.
fn nat_rules(masquerade: &str, upnp: bool) -> String {
    let mut rules = include_str!("../../lab/home-router.nft").replace("MASQUERADE", masquerade);
    if upnp {
        rules.push_str(include_str!("../../lab/miniupnpd.nft"));
    }
    rules
}

/// Debian's miniupnpd as the router's UPnP IGD, for its home's hosts.
async fn miniupnpd(router: &Netns, dir: &Path, h: usize) -> Result<tokio::process::Child> {
    let conf = dir.join(format!("miniupnpd{h}.conf"));
    std::fs::write(
        &conf,
        format!(
            "ext_ifname=wan\nlistening_ip=lan\nport=0\nenable_upnp=yes\nenable_natpmp=no\n\
             secure_mode=yes\nsystem_uptime=yes\nupnp_table_name=miniupnpd\n\
             upnp_nat_table_name=miniupnpd\nuuid=3a1f8e2c-0b6d-4f5e-9c1a-00000000000{h}\n\
             allow 1024-65535 192.168.{h}.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
        ),
    )?;
    let pid = dir.join(format!("miniupnpd{h}.pid"));
    let mut child = router
        .command(Path::new("miniupnpd"))
        .arg("-d")
        .arg("-f")
        .arg(&conf)
        .arg("-P")
        .arg(&pid)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting miniupnpd")?;
    // Ready once it says it listens (a seed that maps before would find
    // no IGD and be reached another way).
    let err = child.stderr.take().context("miniupnpd's stderr")?;
    let mut lines = tokio::io::BufReader::new(err).lines();
    let mut seen = Vec::new();
    let ready = tokio::time::timeout(READY_LIMIT, async {
        while let Ok(Some(l)) = lines.next_line().await {
            let ready = l.contains("HTTP listening on port");
            seen.push(l);
            if ready {
                return true;
            }
        }
        false
    })
    .await;
    if ready != Ok(true) {
        let _ = child.start_kill();
        bail!("miniupnpd did not start:\n{}", seen.join("\n"));
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(child)
}

impl Drop for Internet {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.start_kill();
        }
    }
}

/// A `chorus` process inside `ns`, with its own data dir, nothing found on
/// its own (no LAN, no DHT) and no settings from the user's config.
fn chorus(ns: &Netns, data: &Path, port_map: bool) -> Result<tokio::process::Command> {
    let mut c = ns.command(&std::env::current_exe()?);
    c.arg("--data-dir")
        .arg(data)
        .args(["--lan", "off", "--dht", "off"])
        .env_remove("CHORUS_CONFIG")
        .env("XDG_CONFIG_HOME", data.join("config"))
        .env("CHORUS_PORT_MAP", if port_map { "on" } else { "off" });
    Ok(c)
}

/// Starts a seed in `ns` and waits until its stdout shows `ready` (the
/// line is returned); the process goes on.
async fn start_seed(
    mut cmd: tokio::process::Command,
    ready: &str,
) -> Result<(tokio::process::Child, Vec<String>)> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null()).stdin(Stdio::null());
    let mut child = cmd.spawn().context("starting a seed")?;
    let out = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(out).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(READY_LIMIT, async {
        while let Ok(Some(l)) = lines.next_line().await {
            seen.push(l.clone());
            if l.starts_with(ready) {
                return true;
            }
        }
        false
    })
    .await;
    if found != Ok(true) {
        bail!("a seed never said '{ready}':\n{}", seen.join("\n"));
    }
    // Keep draining its output so it never blocks.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, seen))
}

/// The NAT runs for one profile.
pub async fn nat(
    profile: &LinkProfile,
    samples: &Path,
    tracks: &[Track],
    s: &Settings,
    rec: &Recorder,
    bar: &ProgressBar,
) -> Result<()> {
    if let Some(why) = unavailable() {
        bail!("{why}");
    }
    let name = profile.name;
    let rtt = profile.rtt.as_secs_f64();
    let add = |metric: String, t: Duration| {
        rec.add("nat", name, &format!("{metric}_ms"), Unit::Ms, t.as_secs_f64() * 1e3);
        if rtt > 0.0 {
            rec.add("nat", name, &format!("{metric}_rtt"), Unit::Rtt, t.as_secs_f64() / rtt);
        }
    };
    // The seed's data dir (and so its index) lasts over the cases.
    let seed_data = tempfile::tempdir()?;
    let empty = tempfile::tempdir()?;
    let mut failures = Vec::new();
    for (n, case) in Case::ALL.into_iter().enumerate() {
        let net = build(case, profile, n, s.seed ^ super::swarm::hash_name(name))
            .await
            .with_context(|| format!("building the {} internet", case.name()))?;
        let public_data = net.dir.path().join("public");
        let mut cmd = chorus(&net.public, &public_data, false)?;
        cmd.args(["seed", "--listen", &format!("{PUBLIC_IP}:0")]).arg(empty.path());
        let (_public, said) = start_seed(cmd, "peers can reach it with --peer ").await?;
        let public = said
            .last()
            .and_then(|l| l.strip_prefix("peers can reach it with --peer "))
            .context("the public peer's address")?
            .to_owned();
        let mut cmd = chorus(&net.homes[1].1, seed_data.path(), case == Case::Upnp)?;
        cmd.args(["seed", "--listen", "0.0.0.0:0", "--peer", &public]).arg(samples);
        let (_seed, said) = start_seed(cmd, "joined").await?;
        if !said.last().is_some_and(|l| l.starts_with("joined 1 of 1")) {
            bail!("the seed behind the {} NAT did not join: {said:?}", case.name());
        }
        for i in 0..s.plays {
            let track = &tracks[i % tracks.len()];
            let data = tempfile::tempdir()?;
            let mut cmd = chorus(&net.homes[0].1, data.path(), false)?;
            cmd.args(["-v", "play", &track.manifest.id().to_string(), "--peer", &public]).args([
                "--out",
                "-",
                "--duration",
                "1",
            ]);
            let heard = match super::versus::first_audio_heard(cmd, true).await {
                Ok(h) => h,
                Err(e) => {
                    failures.push(format!("{}: {e:#}", case.name()));
                    bar.inc(1);
                    continue;
                }
            };
            let reached = heard.said.iter().find_map(|(at, l)| {
                let (_, rest) = l.split_once("reached ")?;
                let path = rest.split(" by a ").nth(1)?.split(' ').next()?;
                Some((*at, path.to_owned()))
            });
            match reached {
                // On a lossless link each case has one right path; on a
                // lossy one a punch can lose all its packets and fall back
                // to the relay, as it would out there: it is reported
                // under the path it took.
                Some((_, path)) if path != case.path() && profile.loss == 0.0 => failures.push(
                    format!("{}: the listener got a {path} path, not {}", case.name(), case.path()),
                ),
                Some((at, path)) => {
                    add(format!("{}_{path}_setup", case.name()), at);
                    add(format!("{}_{path}_first_audio", case.name()), heard.audio);
                }
                // The public peer holds nothing: audio comes only once the
                // seed is reached, so this cannot happen.
                None => failures.push(format!("{}: the seed was never reached", case.name())),
            }
            bar.inc(1);
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}
