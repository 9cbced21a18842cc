//! The environment handed to every external worker besides its queue: this process's resolved
//! Temporal connection ([`forwarded_temporal_env`]) and the job secrets ([`job_secret_env`]),
//! each secret value marked so that providers never store it as plain text.

use tea_compute::EnvVar;
use temporalio_common::envconfig::{
    ClientConfigProfile, DataSource, LoadClientConfigProfileOptions, load_client_config_profile,
};

/// This process's resolved Temporal connection (environment, `TEMPORAL_PROFILE`, temporal.toml),
/// as the environment an external worker needs to connect exactly the same way: address,
/// namespace, API key (secret), TLS on or off, client certificate and key (the key secret; files
/// are read and forwarded as data, since the compute does not have them), server CA, server
/// name, host verification, and gRPC metadata (secret: it often carries credentials).
///
/// Fails, naming the setting, when a setting cannot be carried in an environment variable.
pub fn forwarded_temporal_env() -> Result<Vec<EnvVar>, String> {
    let profile = load_client_config_profile(LoadClientConfigProfileOptions::default(), None)
        .map_err(|e| format!("invalid Temporal client configuration: {e}"))?;
    connection_env(profile)
}

/// The job secrets named by `JOB_SECRET_ENV` (comma-separated variable names of this
/// process): each unit of compute gets them as secrets (App Platform `SECRET`; the local
/// worker's environment), and the job inherits them. Fails, naming the variable, when one is
/// unset or empty, not a valid name, or one the external worker itself uses.
pub fn job_secret_env(
    names: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<EnvVar>, String> {
    let mut env: Vec<EnvVar> = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !tea_contract::is_env_var_name(name) {
            return Err(format!(
                "JOB_SECRET_ENV: {name:?} is not a valid variable name"
            ));
        }
        let reserved = [
            "TEMPORAL_",
            "TEA_",
            "OWNER_",
            "DEAD_MAN_",
            "EXTERNAL_TASK_QUEUE",
        ];
        if reserved.iter().any(|r| name.starts_with(r)) {
            return Err(format!(
                "JOB_SECRET_ENV: {name} is one of the external worker's own settings"
            ));
        }
        if env.iter().any(|e| e.key == name) {
            continue;
        }
        let value = lookup(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            format!("JOB_SECRET_ENV names {name}, but {name} is not set in this environment")
        })?;
        env.push(EnvVar {
            key: name.to_owned(),
            value,
            secret: true,
        });
    }
    Ok(env)
}

fn connection_env(profile: ClientConfigProfile) -> Result<Vec<EnvVar>, String> {
    let var = |key: &str, value: String, secret: bool| EnvVar {
        key: key.to_owned(),
        value,
        secret,
    };
    let data = |setting: &str, source: DataSource| -> Result<String, String> {
        let bytes = match source {
            DataSource::Path(path) => std::fs::read(&path)
                .map_err(|e| format!("cannot read {setting} from {path}: {e}"))?,
            DataSource::Data(bytes) => bytes,
            _ => return Err(format!("{setting}: unsupported data source")),
        };
        String::from_utf8(bytes).map_err(|_| {
            format!("{setting} is not text (PEM): it cannot be forwarded to external workers")
        })
    };
    let tls_on = match &profile.tls {
        Some(tls) => tls.disabled != Some(true),
        None => profile.api_key.is_some(),
    };
    let mut env = vec![
        var(
            "TEMPORAL_ADDRESS",
            profile.address.unwrap_or_else(|| "localhost:7233".into()),
            false,
        ),
        var(
            "TEMPORAL_NAMESPACE",
            profile.namespace.unwrap_or_else(|| "default".into()),
            false,
        ),
        var("TEMPORAL_TLS", tls_on.to_string(), false),
    ];
    if let Some(key) = profile.api_key.filter(|k| !k.is_empty()) {
        env.push(var("TEMPORAL_API_KEY", key, true));
    }
    if let Some(tls) = profile.tls.filter(|_| tls_on) {
        if let Some(cert) = tls.client_cert {
            let value = data("the TLS client certificate", cert)?;
            env.push(var("TEMPORAL_TLS_CLIENT_CERT_DATA", value, false));
        }
        if let Some(key) = tls.client_key {
            let value = data("the TLS client key", key)?;
            env.push(var("TEMPORAL_TLS_CLIENT_KEY_DATA", value, true));
        }
        if let Some(ca) = tls.server_ca_cert {
            let value = data("the TLS server CA certificate", ca)?;
            env.push(var("TEMPORAL_TLS_SERVER_CA_CERT_DATA", value, false));
        }
        if let Some(name) = tls.server_name.filter(|n| !n.is_empty()) {
            env.push(var("TEMPORAL_TLS_SERVER_NAME", name, false));
        }
        if tls.disable_host_verification {
            env.push(var(
                "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION",
                "true".into(),
                false,
            ));
        }
    }
    let mut meta: Vec<_> = profile.grpc_meta.into_iter().collect();
    meta.sort();
    for (header, value) in meta {
        // The worker reads TEMPORAL_GRPC_META_<NAME> back as <name> lowercased, `_` as `-`.
        let header = header.to_ascii_lowercase();
        let representable = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !representable {
            return Err(format!(
                "gRPC metadata header {header:?} cannot be forwarded to external workers (only \
                 letters, digits and `-` survive an environment variable name)"
            ));
        }
        let key = format!(
            "TEMPORAL_GRPC_META_{}",
            header.to_ascii_uppercase().replace('-', "_")
        );
        env.push(var(&key, value, true));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use temporalio_common::envconfig::ClientConfigTLS;

    fn keys(env: &[EnvVar]) -> Vec<(&str, bool)> {
        env.iter().map(|e| (e.key.as_str(), e.secret)).collect()
    }

    #[test]
    fn forwards_the_resolved_connection_with_defaults_and_tls_off() {
        let env = connection_env(ClientConfigProfile::default()).unwrap();
        let values: Vec<_> = env
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            values,
            [
                ("TEMPORAL_ADDRESS", "localhost:7233"),
                ("TEMPORAL_NAMESPACE", "default"),
                ("TEMPORAL_TLS", "false"),
            ]
        );
    }

    #[test]
    fn forwards_api_key_mtls_and_metadata_with_secrets_marked() {
        let dir = std::env::temp_dir().join(format!("tea-fwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_path = dir.join("client.key");
        std::fs::write(&key_path, "-----BEGIN PRIVATE KEY-----\nk3y\n").unwrap();
        let mut tls = ClientConfigTLS::default();
        tls.client_cert = Some(DataSource::Data(b"CERT".to_vec()));
        tls.client_key = Some(DataSource::Path(key_path.display().to_string()));
        tls.server_ca_cert = Some(DataSource::Data(b"CA".to_vec()));
        tls.server_name = Some("temporal.internal".into());
        let mut profile = ClientConfigProfile::default();
        profile.address = Some("ns.acct.tmprl.cloud:7233".into());
        profile.namespace = Some("ns.acct".into());
        profile.api_key = Some("ap1-k3y".into());
        profile.tls = Some(tls);
        profile.grpc_meta = [("X-Tenant".to_owned(), "t1".to_owned())].into();
        let env = connection_env(profile).unwrap();
        assert_eq!(
            keys(&env),
            [
                ("TEMPORAL_ADDRESS", false),
                ("TEMPORAL_NAMESPACE", false),
                ("TEMPORAL_TLS", false),
                ("TEMPORAL_API_KEY", true),
                ("TEMPORAL_TLS_CLIENT_CERT_DATA", false),
                ("TEMPORAL_TLS_CLIENT_KEY_DATA", true),
                ("TEMPORAL_TLS_SERVER_CA_CERT_DATA", false),
                ("TEMPORAL_TLS_SERVER_NAME", false),
                ("TEMPORAL_GRPC_META_X_TENANT", true),
            ]
        );
        let value = |k: &str| env.iter().find(|e| e.key == k).map(|e| e.value.clone());
        assert_eq!(value("TEMPORAL_TLS").as_deref(), Some("true"));
        assert!(
            value("TEMPORAL_TLS_CLIENT_KEY_DATA")
                .unwrap()
                .contains("k3y")
        );
        assert!(
            !format!("{env:?}").contains("k3y"),
            "secrets must not show in Debug"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn job_secrets_are_forwarded_as_secrets_and_checked() {
        let lookup = |key: &str| match key {
            "DB_PASSWORD" => Some("hunter2".to_owned()),
            "S3_KEY" => Some("s3cr3t".to_owned()),
            _ => None,
        };
        let env = job_secret_env(" DB_PASSWORD, S3_KEY,,DB_PASSWORD ", lookup).unwrap();
        assert_eq!(keys(&env), [("DB_PASSWORD", true), ("S3_KEY", true)]);
        assert!(!format!("{env:?}").contains("hunter2"));
        for (names, expected) in [
            ("MISSING", "MISSING is not set"),
            ("A-B", "not a valid variable name"),
            ("TEMPORAL_API_KEY", "the external worker's own settings"),
        ] {
            let err = job_secret_env(names, lookup).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        assert!(job_secret_env("", lookup).unwrap().is_empty());
    }

    #[test]
    fn refuses_what_an_environment_variable_cannot_carry() {
        let mut tls = ClientConfigTLS::default();
        tls.client_cert = Some(DataSource::Path("/nonexistent/client.pem".into()));
        let mut unreadable = ClientConfigProfile::default();
        unreadable.tls = Some(tls);
        let err = connection_env(unreadable).unwrap_err();
        assert!(err.contains("/nonexistent/client.pem"), "{err}");
        let mut header = ClientConfigProfile::default();
        header.grpc_meta = [("x_tenant".to_owned(), "t1".to_owned())].into();
        let err = connection_env(header).unwrap_err();
        assert!(err.contains("x_tenant"), "{err}");
    }
}
