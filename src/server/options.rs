//! `lynq run`'s command line: Lynq's flags where they still make sense, each also settable by an
//! environment variable (`LYNQ_…`), as a Deployment's `env` or `args` prefers.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use clap::{ArgAction, Args, ValueEnum};

/// Flags of `lynq run`.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Address of the Prometheus endpoint /metrics (":8080" = every interface, "0" = off).
    #[arg(long, env = "LYNQ_METRICS_BIND_ADDRESS", default_value = ":8080")]
    pub metrics_bind_address: BindAddress,
    /// Address of /healthz and /readyz (":8081" = every interface, "0" = off).
    #[arg(long, env = "LYNQ_HEALTH_PROBE_BIND_ADDRESS", default_value = ":8081")]
    pub health_probe_bind_address: BindAddress,
    /// Run the controllers only while holding a Lease, so that several replicas can run.
    #[arg(
        long,
        env = "LYNQ_LEADER_ELECT",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true"
    )]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: the pod's namespace, else lynq-system).
    #[arg(long, env = "LYNQ_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease (Lynq's, so that lynq and Lynq never run side by side).
    #[arg(long, env = "LYNQ_LEADER_ELECTION_ID", default_value = "f2130106.lynq.sh")]
    pub leader_election_id: String,
    /// Only handle objects of this namespace (default: all namespaces).
    #[arg(long, env = "LYNQ_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// LynqHubs reconciled at once.
    #[arg(long, env = "LYNQ_HUB_CONCURRENCY", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub hub_concurrency: u16,
    /// LynqForms reconciled at once.
    #[arg(long, env = "LYNQ_FORM_CONCURRENCY", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub form_concurrency: u16,
    /// LynqNodes reconciled at once.
    #[arg(long, env = "LYNQ_NODE_CONCURRENCY", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub node_concurrency: u16,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such as
    /// "info,lynq::hub=debug" (default: $RUST_LOG, else info).
    #[arg(long, env = "LYNQ_LOG_LEVEL", alias = "zap-log-level")]
    pub log_level: Option<String>,
    /// Log format: json, text, or auto (text on a terminal, JSON otherwise).
    #[arg(long, env = "LYNQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, alias = "zap-encoder")]
    pub log_format: LogFormat,
    /// Time allowed from SIGTERM to exit (e.g. "10s", "500ms", "1m"): sources stop, in-flight work
    /// finishes, checkpoints are persisted and the lease is released within it.
    #[arg(long, env = "LYNQ_SHUTDOWN_GRACE_PERIOD", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace_period: Duration,
}

impl RunArgs {
    /// The watch namespace, with "" meaning all namespaces.
    pub fn watch_namespace(&self) -> Option<String> {
        self.watch_namespace.clone().filter(|ns| !ns.is_empty())
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines (zap's "console" encoder name is accepted too).
    #[value(alias = "console")]
    Text,
    /// Text when standard error is a terminal, JSON otherwise.
    Auto,
}

impl LogFormat {
    /// Whether this format writes JSON, given whether standard error is a terminal.
    pub fn is_json(self, stderr_is_terminal: bool) -> bool {
        match self {
            Self::Json => true,
            Self::Text => false,
            Self::Auto => !stderr_is_terminal,
        }
    }
}

/// A listen address in Go's notation: "host:port", ":port" (every interface) or "0" (disabled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindAddress(pub Option<SocketAddr>);

/// Why a bind address or duration was not understood.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    /// Not "host:port", ":port" or "0".
    #[error("{0:?} is not an address: expected \"host:port\", \":port\" or \"0\"")]
    Address(String),
    /// Not a number with a unit.
    #[error("{0:?} is not a duration: expected e.g. \"10s\", \"500ms\" or \"1m\"")]
    Duration(String),
}

impl FromStr for BindAddress {
    type Err = OptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || OptionError::Address(s.to_string());
        if s == "0" {
            return Ok(Self(None));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self(Some(addr)));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let ip = match host {
            "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => host.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| bad())?,
        };
        Ok(Self(Some(SocketAddr::new(ip, port))))
    }
}

/// Parses "10s", "500ms", "2m" or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, OptionError> {
    let bad = || OptionError::Duration(s.to_string());
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("lynq").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .run
    }

    #[test]
    fn bind_addresses_in_go_notation() {
        let all = |port| Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
        assert_eq!(":8080".parse::<BindAddress>().ok(), Some(BindAddress(all(8080))));
        assert_eq!("0".parse::<BindAddress>().ok(), Some(BindAddress(None)));
        assert_eq!(
            "127.0.0.1:9".parse::<BindAddress>().ok(),
            Some(BindAddress(Some(SocketAddr::from(([127, 0, 0, 1], 9)))))
        );
        assert_eq!(
            "localhost:9".parse::<BindAddress>().ok(),
            Some(BindAddress(Some(SocketAddr::from(([127, 0, 0, 1], 9)))))
        );
        assert!("[::]:8443".parse::<BindAddress>().is_ok());
        for bad in ["8080", "host:x", "example.com:80", ""] {
            assert!(bad.parse::<BindAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").ok(), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("10").ok(), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms").ok(), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        for bad in ["", "s", "1h", "1.5s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_lynqs() {
        let args = parse(&[]);
        assert_eq!(args.metrics_bind_address, ":8080".parse().expect("address"));
        assert_eq!(args.health_probe_bind_address, ":8081".parse().expect("address"));
        assert!(!args.leader_elect);
        assert_eq!(args.leader_election_id, "f2130106.lynq.sh");
        assert_eq!((args.hub_concurrency, args.form_concurrency, args.node_concurrency), (3, 5, 10));
        assert_eq!(args.log_format, LogFormat::Auto);
        assert_eq!(args.shutdown_grace_period, Duration::from_secs(10));
        assert_eq!(args.watch_namespace(), None);
    }

    #[test]
    fn flags_as_go_writes_them() {
        let args =
            parse(&["--leader-elect", "--node-concurrency=20", "--zap-log-level=debug", "--zap-encoder=console"]);
        assert!(args.leader_elect);
        assert_eq!(args.node_concurrency, 20);
        assert_eq!(args.log_level.as_deref(), Some("debug"));
        assert_eq!(args.log_format, LogFormat::Text);
        assert!(!parse(&["--leader-elect=false"]).leader_elect);
        assert_eq!(parse(&["--watch-namespace="]).watch_namespace(), None);
    }

    #[test]
    fn zero_concurrency_is_rejected() {
        // kube's Controller reads 0 as "unbounded", the opposite of what 0 suggests.
        assert!(Cli::try_parse_from(["lynq", "--hub-concurrency", "0"]).is_err());
    }

    #[test]
    fn auto_format_follows_the_terminal() {
        assert!(LogFormat::Auto.is_json(false));
        assert!(!LogFormat::Auto.is_json(true));
        assert!(LogFormat::Json.is_json(true));
        assert!(!LogFormat::Text.is_json(false));
    }
}
