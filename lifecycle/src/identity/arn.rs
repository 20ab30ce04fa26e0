//! SageMaker HyperPod cluster ARNs: `arn:PARTITION:sagemaker:REGION:ACCOUNT:cluster/ID`.
//!
//! Partition, region and account come from the ARN instead of being
//! assumed, because clusters live in `aws-cn` and `aws-us-gov` too.

/// The parts of a cluster ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterArn {
    /// `aws`, `aws-cn`, `aws-us-gov`, …
    pub partition: String,
    /// e.g. `us-west-2`.
    pub region: String,
    /// 12-digit account id.
    pub account: String,
    /// Cluster id: the last path element of the resource.
    pub id: String,
}

impl ClusterArn {
    /// Parses a cluster ARN; the error says what is wrong.
    pub fn parse(arn: &str) -> Result<ClusterArn, String> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = parts[..] else {
            return Err("it does not have 6 `:`-separated parts".into());
        };
        if prefix != "arn" {
            return Err("it does not start with `arn:`".into());
        }
        let partition_ok = partition
            .strip_prefix("aws")
            .is_some_and(|rest| rest.is_empty() || valid_suffix(rest));
        if !partition_ok {
            return Err(format!("unknown partition `{partition}`"));
        }
        if service != "sagemaker" {
            return Err(format!("service is `{service}`, not `sagemaker`"));
        }
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!("invalid region `{region}`"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("account `{account}` is not 12 digits"));
        }
        let Some(path) = resource.strip_prefix("cluster/") else {
            return Err(format!("resource `{resource}` is not `cluster/ID`"));
        };
        let id = path.rsplit('/').next().unwrap_or_default();
        if id.is_empty() {
            return Err("the cluster id is empty".into());
        }
        Ok(ClusterArn {
            partition: partition.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            id: id.to_string(),
        })
    }
}

/// `-cn`, `-us-gov`, `-iso-b`: dash-separated lowercase words.
fn valid_suffix(rest: &str) -> bool {
    rest.strip_prefix('-').is_some_and(|r| {
        r.split('-')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition() {
        for (arn, partition, region, id) in [
            (
                "arn:aws:sagemaker:us-west-2:111122223333:cluster/kb8v11zrrpvr",
                "aws",
                "us-west-2",
                "kb8v11zrrpvr",
            ),
            (
                "arn:aws-cn:sagemaker:cn-north-1:111122223333:cluster/abc123",
                "aws-cn",
                "cn-north-1",
                "abc123",
            ),
            (
                "arn:aws-us-gov:sagemaker:us-gov-west-1:111122223333:cluster/x9",
                "aws-us-gov",
                "us-gov-west-1",
                "x9",
            ),
        ] {
            let a = ClusterArn::parse(arn).unwrap();
            assert_eq!(a.partition, partition);
            assert_eq!(a.region, region);
            assert_eq!(a.account, "111122223333");
            assert_eq!(a.id, id);
        }
    }

    #[test]
    fn malformed() {
        for (arn, why) in [
            ("kb8v11zrrpvr", "6"),
            ("urn:aws:sagemaker:us-west-2:111122223333:cluster/x", "arn:"),
            (
                "arn:gcp:sagemaker:us-west-2:111122223333:cluster/x",
                "partition",
            ),
            (
                "arn:aws-:sagemaker:us-west-2:111122223333:cluster/x",
                "partition",
            ),
            ("arn:aws:ec2:us-west-2:111122223333:cluster/x", "service"),
            ("arn:aws:sagemaker::111122223333:cluster/x", "region"),
            ("arn:aws:sagemaker:us-west-2:1111:cluster/x", "account"),
            (
                "arn:aws:sagemaker:us-west-2:111122223333:endpoint/x",
                "resource",
            ),
            ("arn:aws:sagemaker:us-west-2:111122223333:cluster/", "empty"),
        ] {
            let e = ClusterArn::parse(arn).unwrap_err();
            assert!(e.contains(why), "{arn}: {e}");
        }
    }
}
