//! AWS: the SDK configuration hpk8s's clients use, and the clients
//! ([`secrets_manager`]: the join ticket's secret).
//!
//! Off EC2 the SDK's default chains would fall through to the instance
//! metadata service (169.254.169.254) for credentials and region. hpk8s
//! detects EC2 first (DMI, hypervisor UUID) and only then lets the SDK ask
//! IMDS; elsewhere credentials come from the environment or a profile, and
//! the region from the inventory or the environment. Endpoint overrides
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SECRETS_MANAGER`) are honoured as
//! the SDK documents, which is how tests point it at a local server.

pub mod sagemaker;
pub mod secrets_manager;

use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::error::class::classify;
use crate::host::Host;
use crate::identity::{NodeIdentity, ec2};

/// Longest time one AWS call may take, retries included: a service that
/// accepts the connection and never answers must not hang the bootstrap
/// (the SDK sets no such limit by default).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no SDK configuration could be built.
#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    /// No region from the inventory, the environment or a profile.
    #[error(
        "no AWS region: the inventory names none and neither AWS_REGION nor a profile sets one; set AWS_REGION"
    )]
    NoRegion,
}

classify!(AwsSetupError {
    NoRegion {} => Config "aws_region_missing";
});

/// The SDK configuration for this node.
pub async fn sdk_config(host: &Host, identity: &NodeIdentity) -> Result<SdkConfig, AwsSetupError> {
    sdk_config_in(host, identity.region.clone()).await
}

/// The SDK configuration with `region` when known (a cluster ARN's), else
/// the environment's, a profile's, or (on EC2 only) IMDS's. Endpoint
/// overrides (`AWS_ENDPOINT_URL`) apply as the SDK reads them.
pub async fn sdk_config_in(
    host: &Host,
    region: Option<String>,
) -> Result<SdkConfig, AwsSetupError> {
    let on_ec2 = ec2::is_ec2(host);
    let known = region.map(Region::new);
    let mut region = RegionProviderChain::first_try(known)
        .or_else(EnvironmentVariableRegionProvider::new())
        .or_else(ProfileFileRegionProvider::builder().build());
    if on_ec2 {
        region = region.or_else(aws_config::imds::region::ImdsRegionProvider::builder().build());
    }
    let region = region.region().await.ok_or(AwsSetupError::NoRegion)?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(OPERATION_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    if !on_ec2 {
        loader = loader.credentials_provider(
            CredentialsProviderChain::first_try(
                "Environment",
                EnvironmentVariableCredentialsProvider::new(),
            )
            .or_else("Profile", ProfileFileCredentialsProvider::builder().build()),
        );
    }
    Ok(loader.load().await)
}
