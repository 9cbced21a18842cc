//! The kubelet of the fake's one node: on each tick it starts the container of every scheduled
//! pod as a local process (the program the image table gives its image, in a process group of
//! its own, dying with the fake), with the pod's environment (`secretKeyRef`s read from their
//! Secret), and reports the pod's status as the real kubelet does: `ContainerCreating`,
//! `ErrImagePull`/`ImagePullBackOff`, `CreateContainerConfigError` (a missing Secret or key, a
//! root user under `runAsNonRoot`), `Running`, then `Succeeded` or `Failed` with the exit code.
//! A deleted pod's process gets SIGTERM, SIGKILL after the grace period, and the pod goes once
//! it exited. Its output is the pod's log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::store::{self, Key, Kind, Shared, State, is_deleting, not_found, now, status_body};
use crate::validate::decode_base64;

/// Variable prefixes of the fake's own environment that containers do not inherit: only the
/// pod's environment configures them.
pub const STRIPPED_ENV_PREFIXES: &[&str] = &["TEMPORAL_", "KUBECONFIG", "K8S_", "FAKE_K8S_"];

/// A container's process.
pub struct Running {
    child: tokio::process::Child,
    pid: i32,
    key: Key,
    /// When SIGTERM was sent, with the grace before SIGKILL.
    terminating: Option<(Instant, Duration)>,
    started_at: String,
}

fn log_path(shared: &Shared, ns: &str, name: &str, uid: &str) -> PathBuf {
    shared.cfg.log_dir.join(format!("{ns}_{name}_{uid}.log"))
}

/// One pass over every pod.
pub fn tick(shared: &Shared) {
    let mut st = shared.lock();
    let mut procs = shared.procs();
    // Processes: reap those that exited, stop those whose pod is deleted, ended or gone.
    let uids: Vec<String> = procs.keys().cloned().collect();
    for uid in uids {
        let Some(run) = procs.get_mut(&uid) else {
            continue;
        };
        let pod = st.objects.get(&run.key).cloned();
        let stop = match &pod {
            None => Some(Duration::ZERO),
            Some(p) if is_deleting(p) => Some(Duration::from_secs(
                p["metadata"]["deletionGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(30),
            )),
            Some(p) if matches!(p["status"]["phase"].as_str(), Some("Failed" | "Succeeded")) => {
                Some(Duration::ZERO)
            }
            Some(_) => None,
        };
        if let Some(grace) = stop {
            match run.terminating {
                None => {
                    let signal = if grace.is_zero() {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    };
                    let _ = killpg(Pid::from_raw(run.pid), signal);
                    run.terminating = Some((Instant::now(), grace));
                }
                Some((at, grace)) if at.elapsed() >= grace => {
                    let _ = killpg(Pid::from_raw(run.pid), Signal::SIGKILL);
                }
                Some(_) => {}
            }
        }
        if let Ok(Some(exit)) = run.child.try_wait() {
            use std::os::unix::process::ExitStatusExt;
            let _ = killpg(Pid::from_raw(run.pid), Signal::SIGKILL);
            let code = exit
                .code()
                .unwrap_or_else(|| 128 + exit.signal().unwrap_or(9));
            let run = procs.remove(&uid).expect("present");
            if let Some(mut pod) =
                pod.filter(|p| !is_deleting(p) && p["status"]["phase"] == "Running")
            {
                terminated(&mut pod, code, &run.started_at);
                st.put(run.key.clone(), pod);
            }
        }
    }
    let pods: Vec<(Key, Value)> = st
        .objects
        .iter()
        .filter(|((k, _, _), _)| *k == Kind::Pod)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, pod) in pods {
        let uid = store::uid(&pod).unwrap_or_default().to_owned();
        if is_deleting(&pod) {
            if !procs.contains_key(&uid) {
                st.objects.remove(&key);
            }
            continue;
        }
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        if phase != "Pending" || pod["spec"]["nodeName"].is_null() || procs.contains_key(&uid) {
            continue;
        }
        let mut next = pod.clone();
        match start(shared, &mut st, &key, &pod) {
            Ok(run) => {
                running(&mut next, &run.started_at);
                st.pods_started.push(key.2.clone());
                procs.insert(uid, run);
            }
            Err((reason, message)) => waiting(&mut next, &reason, &message),
        }
        if next != pod {
            st.put(key, next);
        }
    }
}

/// Starts the pod's container, or why it cannot start (a waiting reason and message).
fn start(
    shared: &Shared,
    st: &mut State,
    key: &Key,
    pod: &Value,
) -> Result<Running, (String, String)> {
    let (ns, name) = (&key.1, &key.2);
    let container = &pod["spec"]["containers"][0];
    let image = container["image"].as_str().unwrap_or_default();
    if image.is_empty()
        || image.contains(char::is_whitespace)
        || image.chars().any(|c| c.is_ascii_uppercase())
    {
        return Err((
            "InvalidImageName".into(),
            format!(
                "Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: invalid reference format"
            ),
        ));
    }
    let command = shared
        .cfg
        .images
        .get(image)
        .filter(|_| !st.pull_failures.contains(name));
    let Some((program, args)) = command else {
        let previous = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str();
        return Err(
            if previous == Some("ErrImagePull") || previous == Some("ImagePullBackOff") {
                (
                    "ImagePullBackOff".into(),
                    format!("Back-off pulling image {image:?}"),
                )
            } else {
                (
                    "ErrImagePull".into(),
                    format!(
                        "failed to pull and unpack image {image:?}: failed to resolve reference {image:?}: pull access denied, repository does not exist or may require authorization"
                    ),
                )
            },
        );
    };
    let user = container["securityContext"]["runAsUser"]
        .as_i64()
        .or(pod["spec"]["securityContext"]["runAsUser"].as_i64());
    let non_root = container["securityContext"]["runAsNonRoot"]
        .as_bool()
        .or(pod["spec"]["securityContext"]["runAsNonRoot"].as_bool());
    if non_root == Some(true) && user.is_none_or(|u| u == 0) {
        return Err((
            "CreateContainerConfigError".into(),
            format!(
                "container has runAsNonRoot and image will run as root (pod: \"{name}_{ns}\", container: {})",
                container["name"].as_str().unwrap_or("")
            ),
        ));
    }
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let var_name = var["name"].as_str().unwrap_or_default().to_owned();
        if let Some(value) = var["value"].as_str() {
            env.insert(var_name, value.to_owned());
        } else if let Some(selector) = var["valueFrom"]["secretKeyRef"].as_object() {
            let secret_name = selector["name"].as_str().unwrap_or_default();
            let key_name = selector["key"].as_str().unwrap_or_default();
            let Some(secret) = st
                .objects
                .get(&(Kind::Secret, ns.clone(), secret_name.to_owned()))
            else {
                return Err((
                    "CreateContainerConfigError".into(),
                    format!("secret \"{secret_name}\" not found"),
                ));
            };
            let value = secret["data"][key_name]
                .as_str()
                .and_then(decode_base64)
                .ok_or_else(|| {
                    (
                        "CreateContainerConfigError".to_owned(),
                        format!("couldn't find key {key_name} in Secret {ns}/{secret_name}"),
                    )
                })?;
            env.insert(var_name, String::from_utf8_lossy(&value).into_owned());
        }
    }
    let uid = store::uid(pod).unwrap_or_default();
    let log = log_path(shared, ns, name, uid);
    let spawned = spawn(program, args, &env, &log);
    match spawned {
        Ok(child) => {
            let pid = child.id().map_or(0, |p| p as i32);
            tracing::info!(pod = %name, pid, image, "kubelet started the container");
            Ok(Running {
                child,
                pid,
                key: key.clone(),
                terminating: None,
                started_at: now(),
            })
        }
        Err(e) => Err((
            "CreateContainerError".into(),
            format!("failed to start the container process: {e}"),
        )),
    }
}

fn spawn(
    program: &PathBuf,
    args: &[String],
    env: &BTreeMap<String, String>,
    log: &PathBuf,
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_clear();
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if !STRIPPED_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) {
            cmd.env(k, v);
        }
    }
    cmd.envs(env);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    cmd.process_group(0);
    cmd.kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure only makes the prctl(2) syscall, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}

fn condition(kind: &str, ok: bool, reason: Option<&str>) -> Value {
    let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now()});
    if let Some(reason) = reason {
        c["reason"] = json!(reason);
    }
    c
}

fn container_status(pod: &Value, state: Value, ready: bool) -> Value {
    let image = pod["spec"]["containers"][0]["image"].clone();
    json!([{
        "name": pod["spec"]["containers"][0]["name"], "state": state, "lastState": {},
        "ready": ready, "started": ready, "restartCount": 0, "image": image,
        "imageID": if ready { json!(format!("{}@sha256:fake", image.as_str().unwrap_or(""))) } else { json!("") },
    }])
}

fn waiting(pod: &mut Value, reason: &str, message: &str) {
    let state = json!({"waiting": {"reason": reason, "message": message}});
    pod["status"]["containerStatuses"] = container_status(pod, state, false);
    pod["status"]["conditions"] = json!([
        condition("PodReadyToStartContainers", true, None),
        condition("Initialized", true, None),
        condition("Ready", false, Some("ContainersNotReady")),
        condition("ContainersReady", false, Some("ContainersNotReady")),
        condition("PodScheduled", true, None),
    ]);
    pod["status"]["hostIP"] = json!("10.0.0.1");
    if pod["status"]["startTime"].is_null() {
        pod["status"]["startTime"] = json!(now());
    }
}

fn running(pod: &mut Value, started_at: &str) {
    let state = json!({"running": {"startedAt": started_at}});
    pod["status"]["phase"] = json!("Running");
    pod["status"]["containerStatuses"] = container_status(pod, state, true);
    pod["status"]["containerStatuses"][0]["containerID"] =
        json!(format!("containerd://{}", uuid::Uuid::new_v4().simple()));
    pod["status"]["conditions"] = json!([
        condition("PodReadyToStartContainers", true, None),
        condition("Initialized", true, None),
        condition("Ready", true, None),
        condition("ContainersReady", true, None),
        condition("PodScheduled", true, None),
    ]);
    pod["status"]["podIP"] = json!("10.244.0.10");
    pod["status"]["hostIP"] = json!("10.0.0.1");
    if pod["status"]["startTime"].is_null() {
        pod["status"]["startTime"] = json!(now());
    }
}

fn terminated(pod: &mut Value, code: i32, started_at: &str) {
    let reason = if code == 0 { "Completed" } else { "Error" };
    let id = pod["status"]["containerStatuses"][0]["containerID"].clone();
    let state = json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": now(), "containerID": id}});
    pod["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
    pod["status"]["containerStatuses"] = container_status(pod, state, false);
    pod["status"]["containerStatuses"][0]["containerID"] = id;
    pod["status"]["conditions"] = json!([
        condition("PodReadyToStartContainers", false, None),
        condition("Initialized", true, Some("PodCompleted")),
        condition("Ready", false, Some("PodCompleted")),
        condition("ContainersReady", false, Some("PodCompleted")),
        condition("PodScheduled", true, None),
    ]);
}

/// Evicts the pod as the kubelet does under node pressure: its container is killed and the
/// pod ends `Failed`, reason `Evicted`. False when there is no such pod.
pub fn evict(shared: &Shared, ns: &str, name: &str) -> bool {
    let key = (Kind::Pod, ns.to_owned(), name.to_owned());
    let mut st = shared.lock();
    let Some(mut pod) = st.objects.get(&key).cloned() else {
        return false;
    };
    let started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    terminated(&mut pod, 137, &started);
    pod["status"]["phase"] = json!("Failed");
    pod["status"]["reason"] = json!("Evicted");
    pod["status"]["message"] = json!(
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 52Mi. Container worker was using 900Mi, request is 0, has larger consumption of memory."
    );
    let mut conditions = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conditions.push(json!({"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet", "message": "The node was low on resource: memory.", "lastProbeTime": null, "lastTransitionTime": now()}));
    pod["status"]["conditions"] = json!(conditions);
    st.put(key, pod);
    true
}

/// The log of the pod's container (its last `tail` lines), or a `Status`.
pub fn log_of(shared: &Shared, ns: &str, name: &str, tail: Option<usize>) -> Result<String, Value> {
    let key = (Kind::Pod, ns.to_owned(), name.to_owned());
    let pod = shared
        .lock()
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| not_found(Kind::Pod, name))?;
    let path = log_path(shared, ns, name, store::uid(&pod).unwrap_or_default());
    let Ok(text) = std::fs::read_to_string(&path) else {
        let reason = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or("ContainerCreating");
        let message =
            format!("container \"worker\" in pod \"{name}\" is waiting to start: {reason}");
        return Err(status_body(400, "BadRequest", &message, Value::Null));
    };
    Ok(match tail {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
            out.push('\n');
            out
        }
        None => text,
    })
}

/// Kills every container at once (the fake is going away).
pub fn kill_all(shared: &Shared) {
    for run in shared.procs().values() {
        let _ = killpg(Pid::from_raw(run.pid), Signal::SIGKILL);
    }
}
