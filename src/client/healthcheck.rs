//! `segmentd healthcheck`: one standard health Check, for Docker's
//! `HEALTHCHECK` and exec probes.

use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Asks the server at `addr`, in plaintext, about `service` ("" for the
/// whole server). Returns whether it is SERVING.
pub async fn check(addr: &str, service: &str, timeout: Duration) -> anyhow::Result<bool> {
    check_at(super::channel::endpoint(addr, None)?, service, timeout).await
}

/// Asks the server at `endpoint` about `service` ("" for the whole server).
/// Returns whether it is SERVING.
pub async fn check_at(
    endpoint: Endpoint,
    service: &str,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let channel = endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    let status = response.into_inner().status();
    println!("{}", status.as_str_name());
    Ok(status == ServingStatus::Serving)
}
