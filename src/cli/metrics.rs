//! The metrics flags of `segmentd serve`.

use std::net::SocketAddr;

use clap::Args;
use tokio::net::TcpListener;

/// Where Prometheus metrics are served.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Address of an HTTP listener serving Prometheus metrics on
    /// `/metrics`, e.g. `0.0.0.0:9090`; no metrics listener when left out.
    #[arg(long, env = "SEGMENTD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// The metrics listener, bound, if one was asked for.
    pub async fn bind(&self) -> anyhow::Result<Option<TcpListener>> {
        let Some(addr) = self.metrics_listen else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen for metrics on {addr}: {error}"))?;
        Ok(Some(listener))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        metrics: MetricsArgs,
    }

    #[test]
    fn metrics_are_off_unless_asked_for() {
        let flags = Flags::try_parse_from(["segmentd"]).unwrap();
        assert_eq!(flags.metrics.metrics_listen, None);
        let flags =
            Flags::try_parse_from(["segmentd", "--metrics-listen", "127.0.0.1:9090"]).unwrap();
        assert_eq!(
            flags.metrics.metrics_listen,
            Some(([127, 0, 0, 1], 9090).into())
        );
        assert!(Flags::try_parse_from(["segmentd", "--metrics-listen", "nowhere"]).is_err());
    }
}
