//! How the Docker provider hands a container its secrets (the job's secrets, the Temporal API
//! key and client key): not in the container's environment, which `docker inspect` shows to
//! anyone with access to the engine and to every tool that records it, but in a file uploaded
//! into the created container before it starts (`PUT /containers/{id}/archive`, which works
//! with a remote engine too, unlike a bind mount). The file belongs to the container's user
//! (numeric IDs set in the archive; a user name resolved by the engine in the image's
//! `/etc/passwd`, `copyUIDGID`) and only it may read it; the external worker moves
//! the values into its environment and deletes the file as it starts, before any job runs
//! (see [`tea_contract::SECRETS_FILE_ENV`]).
//!
//! What remains: from create until the worker starts, the file is in the container's
//! writable layer, where those with access to the engine can read it (`docker cp`, the
//! engine's storage): the same people who could `docker exec` into the container. The
//! engine's own secrets (a tmpfs it manages) exist only for Swarm services.
//! `DOCKER_SECRETS=env` puts secrets in the environment instead, for images whose
//! external-worker predates the file.

use std::collections::BTreeMap;

use crate::EnvVar;

/// The directory the secrets file is uploaded into (made for it alone).
pub(crate) const SECRETS_DIR: &str = ".tea-secrets";
/// Where the secrets file is in the container.
pub(crate) const SECRETS_PATH: &str = "/.tea-secrets/env.json";

/// The variables of `env` that go into the container's environment, and the secret ones that
/// go into the file (when `in_env` is false and there are any). When there is a file, the
/// environment names it in [`tea_contract::SECRETS_FILE_ENV`].
pub(crate) fn split(env: Vec<EnvVar>, in_env: bool) -> (Vec<EnvVar>, BTreeMap<String, String>) {
    if in_env {
        return (env, BTreeMap::new());
    }
    let (secret, mut plain): (Vec<EnvVar>, Vec<EnvVar>) = env.into_iter().partition(|v| v.secret);
    let file: BTreeMap<String, String> = secret.into_iter().map(|v| (v.key, v.value)).collect();
    if !file.is_empty() {
        plain.push(EnvVar {
            key: tea_contract::SECRETS_FILE_ENV.to_owned(),
            value: SECRETS_PATH.to_owned(),
            secret: false,
        });
    }
    (plain, file)
}

/// Who the secrets file must belong to: the container's user, from its `User` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Numeric IDs (or root, for an empty setting): written into the archive.
    Ids(u32, u32),
    /// A user or group given by name: the engine resolves it in the image (`copyUIDGID`).
    ByName,
}

impl Owner {
    /// The owner for a container whose `User` is `user` (`""`, `"65532"`, `"65532:65532"`,
    /// `"app"`, `"app:staff"`).
    pub(crate) fn of_user(user: &str) -> Owner {
        let user = user.trim();
        if user.is_empty() {
            return Owner::Ids(0, 0);
        }
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        match (uid.parse(), gid.parse()) {
            (Ok(uid), Ok(gid)) => Owner::Ids(uid, gid),
            _ => Owner::ByName,
        }
    }
}

/// A tar of [`SECRETS_DIR`] (mode 0700) holding `env.json` (mode 0400): the JSON object of
/// `secrets`, to extract at `/`, owned by `owner`.
pub(crate) fn archive(secrets: &BTreeMap<String, String>, owner: Owner) -> Vec<u8> {
    let json = serde_json::to_vec(secrets).unwrap_or_default();
    let ids = match owner {
        Owner::Ids(uid, gid) => (uid, gid),
        Owner::ByName => (0, 0),
    };
    let mut tar = Vec::with_capacity(4 * 512 + json.len());
    tar.extend(header(&format!("{SECRETS_DIR}/"), 0o700, ids, 0, b'5'));
    tar.extend(header(
        &format!("{SECRETS_DIR}/env.json"),
        0o400,
        ids,
        json.len(),
        b'0',
    ));
    tar.extend(&json);
    tar.resize(tar.len().next_multiple_of(512), 0);
    // The end of the archive: two empty blocks.
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// A POSIX ustar header block for `name` (at most 100 bytes).
fn header(name: &str, mode: u32, (uid, gid): (u32, u32), size: usize, kind: u8) -> [u8; 512] {
    let mut block = [0u8; 512];
    let mut put = |at: usize, bytes: &[u8]| block[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, name.as_bytes());
    put(100, format!("{mode:07o}\0").as_bytes());
    put(108, format!("{uid:07o}\0").as_bytes());
    put(116, format!("{gid:07o}\0").as_bytes());
    put(124, format!("{size:011o}\0").as_bytes());
    put(136, b"00000000000\0"); // mtime
    put(148, b"        "); // checksum, counted as spaces
    put(156, &[kind]);
    put(257, b"ustar\0");
    put(263, b"00");
    let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(key: &str, value: &str, secret: bool) -> EnvVar {
        EnvVar {
            key: key.into(),
            value: value.into(),
            secret,
        }
    }

    #[test]
    fn secrets_go_to_the_file_and_the_environment_names_it() {
        let env = vec![
            var("TEMPORAL_ADDRESS", "host:7233", false),
            var("TEMPORAL_API_KEY", "k3y", true),
            var("DB_PASSWORD", "hunter22", true),
        ];
        let (plain, file) = split(env.clone(), false);
        let keys: Vec<&str> = plain.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(keys, ["TEMPORAL_ADDRESS", tea_contract::SECRETS_FILE_ENV]);
        assert!(
            !format!("{:?}", plain.iter().map(|v| &v.value).collect::<Vec<_>>()).contains("k3y")
        );
        assert_eq!(
            file.get("DB_PASSWORD").map(String::as_str),
            Some("hunter22")
        );
        assert_eq!(file.len(), 2);
        // In the environment, on request: no file.
        let (plain, file) = split(env, true);
        assert_eq!(plain.len(), 3);
        assert!(file.is_empty());
        // No secrets: no file either.
        let (plain, file) = split(vec![var("A", "b", false)], false);
        assert_eq!((plain.len(), file.len()), (1, 0));
    }

    #[test]
    fn the_owner_follows_the_container_s_user() {
        assert_eq!(Owner::of_user(""), Owner::Ids(0, 0));
        assert_eq!(Owner::of_user("65532"), Owner::Ids(65532, 0));
        assert_eq!(Owner::of_user("65532:65533"), Owner::Ids(65532, 65533));
        assert_eq!(Owner::of_user("nonroot"), Owner::ByName);
        assert_eq!(Owner::of_user("1000:staff"), Owner::ByName);
    }

    #[test]
    fn the_archive_is_a_tar_the_system_tar_reads() {
        let secrets = BTreeMap::from([("DB_PASSWORD".to_owned(), "hunter22".to_owned())]);
        let dir = std::env::temp_dir().join(format!("tea-secrets-tar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tar = dir.join("secrets.tar");
        std::fs::write(&tar, archive(&secrets, Owner::Ids(65532, 65533))).unwrap();
        let listing = std::process::Command::new("tar")
            .arg("--numeric-owner")
            .arg("-tvf")
            .arg(&tar)
            .output()
            .expect("tar");
        let content = std::process::Command::new("tar")
            .arg("-xOf")
            .arg(&tar)
            .arg(".tea-secrets/env.json")
            .output()
            .expect("tar");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(content.stdout, br#"{"DB_PASSWORD":"hunter22"}"#);
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 2, "{listing}");
        assert!(lines[0].starts_with("drwx------") && lines[0].ends_with(".tea-secrets/"));
        assert!(lines[1].starts_with("-r--------") && lines[1].ends_with(".tea-secrets/env.json"));
        assert!(lines[1].contains(" 65532/65533 "), "{listing}");
    }
}
