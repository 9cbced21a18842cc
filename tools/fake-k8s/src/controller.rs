//! The control plane behind the API: storing a created object as the API server does (UID,
//! creation time, a Job's defaults and selector), deleting with a propagation policy, and, on
//! each tick, the Job controller (one pod per Job, its status and conditions, the active
//! deadline), the TTL-after-finished controller and the garbage collector (dependents whose
//! owners are gone; owners in foreground deletion once their dependents are).

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};

use crate::faults::take_pod_faults;
use crate::store::{
    self, Key, Kind, Shared, State, already_exists, is_deleting, not_found, now, owners, parse_time,
};
use crate::validate::encode_base64;

/// Labels the Job controller puts on a Job's pod template and pods.
const JOB_LABELS: [&str; 4] = [
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "controller-uid",
    "job-name",
];

/// Stores a new object (already validated); the stored object, or a `Status` (409).
pub fn create(
    shared: &Arc<Shared>,
    kind: Kind,
    ns: &str,
    mut object: Value,
) -> Result<Value, Value> {
    let name = store::name(&object).unwrap_or_default().to_owned();
    let key = (kind, ns.to_owned(), name.clone());
    let mut st = shared.lock();
    if st.objects.contains_key(&key) {
        return Err(already_exists(kind, &name));
    }
    let uid = uuid::Uuid::new_v4().to_string();
    object["apiVersion"] = json!(kind.api_version());
    object["kind"] = json!(kind.name());
    let meta = &mut object["metadata"];
    meta["namespace"] = json!(ns);
    meta["uid"] = json!(uid);
    meta["creationTimestamp"] = json!(now());
    match kind {
        Kind::Job => {
            meta["generation"] = json!(1);
            let labels = job_labels(&uid, &name);
            let spec = &mut object["spec"];
            for (field, value) in [
                ("completions", json!(1)),
                ("parallelism", json!(1)),
                ("completionMode", json!("NonIndexed")),
                ("suspend", json!(false)),
                ("manualSelector", json!(false)),
                ("backoffLimit", json!(6)),
            ] {
                if spec[field].is_null() {
                    spec[field] = value;
                }
            }
            spec["selector"] = json!({"matchLabels": {JOB_LABELS[0]: uid}});
            for (k, v) in labels {
                spec["template"]["metadata"]["labels"][k] = json!(v);
            }
            object["status"] = json!({});
        }
        Kind::Secret => {
            if let Some(strings) = object["stringData"].as_object().cloned() {
                for (k, v) in strings {
                    let text = v.as_str().unwrap_or_default();
                    object["data"][k] = json!(encode_base64(text.as_bytes()));
                }
                object.as_object_mut().map(|o| o.remove("stringData"));
            }
            if object["type"].is_null() {
                object["type"] = json!("Opaque");
            }
        }
        Kind::Pod => {}
    }
    st.put(key.clone(), object);
    Ok(st.objects[&key].clone())
}

fn job_labels(uid: &str, name: &str) -> [(&'static str, String); 4] {
    [
        (JOB_LABELS[0], uid.to_owned()),
        (JOB_LABELS[1], name.to_owned()),
        (JOB_LABELS[2], uid.to_owned()),
        (JOB_LABELS[3], name.to_owned()),
    ]
}

/// Deletes `key` with `policy` (`Foreground`, `Background`, `Orphan`; a Job's default is
/// `Orphan`, as for any client of `batch/v1` that does not say). A pod is deleted gracefully:
/// marked, and removed by the kubelet once its container stopped.
pub fn delete(
    shared: &Shared,
    key: &Key,
    policy: Option<&str>,
    grace: Option<i64>,
) -> Result<Value, Value> {
    let (kind, _, name) = key;
    let mut st = shared.lock();
    let Some(mut object) = st.objects.get(key).cloned() else {
        return Err(not_found(*kind, name));
    };
    if is_deleting(&object) {
        return Ok(object);
    }
    let policy = policy.unwrap_or(if *kind == Kind::Job {
        "Orphan"
    } else {
        "Background"
    });
    if !matches!(policy, "Foreground" | "Background" | "Orphan") {
        let message = format!(
            "Unsupported value: {policy:?}: supported values: \"Orphan\", \"Background\", \"Foreground\""
        );
        return Err(store::status_body(422, "Invalid", &message, Value::Null));
    }
    if *kind == Kind::Pod {
        let grace = grace
            .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30);
        object["metadata"]["deletionTimestamp"] = json!(now());
        object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        st.put(key.clone(), object.clone());
        return Ok(st.objects[key].clone());
    }
    let uid = store::uid(&object).unwrap_or_default().to_owned();
    match policy {
        "Foreground" => {
            object["metadata"]["deletionTimestamp"] = json!(now());
            object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            object["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
            st.put(key.clone(), object.clone());
            Ok(st.objects[key].clone())
        }
        _ => {
            if policy == "Orphan" {
                orphan_dependents(&mut st, &uid);
            }
            st.objects.remove(key);
            let (group, kinds) = kind.details();
            Ok(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": group, "kind": kinds, "uid": uid}
            }))
        }
    }
}

fn orphan_dependents(st: &mut State, uid: &str) {
    let keys: Vec<Key> = st
        .objects
        .iter()
        .filter(|(_, o)| owners(o).iter().any(|(u, _)| u == uid))
        .map(|(k, _)| k.clone())
        .collect();
    for key in keys {
        let mut object = st.objects[&key].clone();
        if let Some(refs) = object["metadata"]["ownerReferences"].as_array_mut() {
            refs.retain(|r| r["uid"].as_str() != Some(uid));
        }
        st.put(key, object);
    }
}

/// One pass of the controllers.
pub fn tick(shared: &Shared) {
    let mut st = shared.lock();
    collect_garbage(&mut st);
    let jobs: Vec<(Key, Value)> = st
        .objects
        .iter()
        .filter(|((k, _, _), _)| *k == Kind::Job)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, job) in jobs {
        if !is_deleting(&job) {
            reconcile_job(&mut st, key, job);
        }
    }
}

/// Dependents of owners that are gone go (pods gracefully); an owner in foreground deletion
/// goes once no dependent blocks it.
fn collect_garbage(st: &mut State) {
    let mut orphans = Vec::new();
    let mut blocked = std::collections::HashSet::new();
    for (key, object) in &st.objects {
        let refs = owners(object);
        if !refs.is_empty() && refs.iter().all(|(uid, _)| !st.uid_exists(uid)) {
            orphans.push(key.clone());
        }
        for (uid, blocks) in refs {
            if blocks {
                blocked.insert(uid);
            }
        }
    }
    // Dependents of owners being deleted in the foreground go first.
    let foreground: Vec<String> = st
        .objects
        .values()
        .filter(|o| {
            o["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.contains(&json!("foregroundDeletion")))
        })
        .filter_map(|o| store::uid(o).map(str::to_owned))
        .collect();
    for (key, object) in &st.objects {
        if owners(object)
            .iter()
            .any(|(uid, _)| foreground.contains(uid))
        {
            orphans.push(key.clone());
        }
    }
    for key in orphans {
        match st.objects.get(&key) {
            Some(_) if key.0 == Kind::Pod => {
                let _ = mark_pod_deleted(st, &key);
            }
            Some(_) => {
                st.objects.remove(&key);
            }
            None => {}
        }
    }
    let done: Vec<Key> = st
        .objects
        .iter()
        .filter(|(_, o)| {
            o["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.contains(&json!("foregroundDeletion")))
                && store::uid(o).is_some_and(|uid| !blocked.contains(uid))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in done {
        st.objects.remove(&key);
    }
}

fn reconcile_job(st: &mut State, key: Key, mut job: Value) {
    let (ns, name) = (key.1.clone(), key.2.clone());
    let (ns, name) = (ns.as_str(), name.as_str());
    let uid = store::uid(&job).unwrap_or_default().to_owned();
    let pods: Vec<(Key, Value)> = st
        .of_kind(Kind::Pod, ns)
        .into_iter()
        .filter(|(_, p)| owners(p).iter().any(|(u, _)| *u == uid))
        .collect();
    let before = job["status"].clone();
    let status = &mut job["status"];
    let finished = finished_at(status);
    if let Some(at) = finished {
        // The TTL-after-finished controller.
        let ttl = job["spec"]["ttlSecondsAfterFinished"].as_i64();
        if let Some(ttl) = ttl
            && (Utc::now() - at).num_seconds() >= ttl
        {
            let uid = uid.clone();
            job["metadata"]["deletionTimestamp"] = json!(now());
            job["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
            st.put(key, job);
            tracing::info!(job = %name, uid, "TTL after finished: deleting the Job");
        }
        return;
    }
    if status["startTime"].is_null() {
        status["startTime"] = json!(now());
    }
    let started = parse_time(&status["startTime"]).unwrap_or_else(Utc::now);
    let deadline = job["spec"]["activeDeadlineSeconds"].as_i64();
    if let Some(deadline) = deadline
        && (Utc::now() - started).num_seconds() >= deadline
    {
        for (pod_key, _) in &pods {
            let _ = mark_pod_deleted(st, pod_key);
        }
        fail(
            &mut job["status"],
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        );
        st.put(key, job);
        return;
    }
    let phase_of = |p: &Value| {
        p["status"]["phase"]
            .as_str()
            .unwrap_or("Pending")
            .to_owned()
    };
    if pods.is_empty() {
        if st.jobs_with_pod.insert(uid.clone()) {
            create_pod(st, &job, ns, name, &uid);
            job["status"]["active"] = json!(1);
            job["status"]["ready"] = json!(0);
            job["status"]["terminating"] = json!(0);
            job["status"]["uncountedTerminatedPods"] = json!({});
        } else {
            // The pod went (deleted, evicted and removed) before it ended: a failure, and
            // backoffLimit 0 ends the Job (podReplacementPolicy Failed: nothing replaces it).
            job["status"]["active"] = json!(0);
            job["status"]["failed"] = json!(1);
            fail(
                &mut job["status"],
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            );
        }
    } else {
        let status = &mut job["status"];
        let (_, pod) = &pods[0];
        match phase_of(pod).as_str() {
            "Succeeded" => {
                status["active"] = json!(0);
                status["succeeded"] = json!(1);
                status["completionTime"] = json!(now());
                let t = now();
                status["conditions"] = json!([
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t},
                ]);
            }
            "Failed" => {
                status["active"] = json!(0);
                status["failed"] = json!(1);
                fail(
                    status,
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                );
            }
            _ => {
                let ready = pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                status["active"] = json!(if is_deleting(pod) { 0 } else { 1 });
                status["terminating"] = json!(if is_deleting(pod) { 1 } else { 0 });
                status["ready"] = json!(if ready { 1 } else { 0 });
            }
        }
    }
    if job["status"] != before {
        st.put(key, job);
    }
}

fn finished_at(status: &Value) -> Option<chrono::DateTime<Utc>> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| {
            matches!(c["type"].as_str(), Some("Complete" | "Failed")) && c["status"] == "True"
        })
        .and_then(|c| parse_time(&c["lastTransitionTime"]))
}

fn fail(status: &mut Value, reason: &str, message: &str) {
    let t = now();
    status["conditions"] = json!([
        {"type": "FailureTarget", "status": "True", "reason": reason, "message": message, "lastProbeTime": t, "lastTransitionTime": t},
        {"type": "Failed", "status": "True", "reason": reason, "message": message, "lastProbeTime": t, "lastTransitionTime": t},
    ]);
}

fn mark_pod_deleted(st: &mut State, key: &Key) -> Option<()> {
    let mut pod = st.objects.get(key)?.clone();
    if !is_deleting(&pod) {
        let grace = pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
        pod["metadata"]["deletionTimestamp"] = json!(now());
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        st.put(key.clone(), pod);
    }
    Some(())
}

/// The Job controller's pod: the template, the Job's labels, owned by the Job.
fn create_pod(st: &mut State, job: &Value, ns: &str, job_name: &str, job_uid: &str) {
    use rand::Rng;
    let suffix: String = (0..5)
        .map(|_| {
            let chars = b"bcdfghjklmnpqrstvwxz2456789";
            chars[rand::rng().random_range(0..chars.len())] as char
        })
        .collect();
    let name = format!("{job_name}-{suffix}");
    let template = &job["spec"]["template"];
    let mut metadata = template["metadata"].clone();
    if metadata.is_null() {
        metadata = json!({});
    }
    metadata["name"] = json!(name);
    metadata["generateName"] = json!(format!("{job_name}-"));
    metadata["namespace"] = json!(ns);
    metadata["uid"] = json!(uuid::Uuid::new_v4().to_string());
    metadata["creationTimestamp"] = json!(now());
    metadata["ownerReferences"] = json!([{
        "apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid,
        "controller": true, "blockOwnerDeletion": true
    }]);
    let (pull_fails, unschedulable) = take_pod_faults(&mut st.faults);
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template["spec"].clone(),
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    });
    let t = now();
    match unschedulable {
        Some(message) => {
            pod["status"]["conditions"] = json!([{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": message, "lastProbeTime": null, "lastTransitionTime": t
            }]);
        }
        None => {
            pod["spec"]["nodeName"] = json!(crate::NODE_NAME);
            pod["status"]["conditions"] = json!([{
                "type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": t
            }]);
        }
    }
    if pull_fails {
        st.pull_failures.insert(name.clone());
    }
    tracing::info!(pod = %name, job = %job_name, "Job controller created a pod");
    st.put((Kind::Pod, ns.to_owned(), name), pod);
}
