//! The entries of a `workspace.yaml`, as `"<kind> <location> <host>:<port>"`, for the
//! tests of both modes (a file on Docker, a ConfigMap key on Kubernetes).

/// Every entry of the workspace `text`, in order.
pub fn entries(text: &str) -> Vec<String> {
    let doc: serde_json::Value = serde_norway::from_str(text).unwrap_or_default();
    doc["load_from"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let (kind, body) = e.as_object()?.iter().next()?;
            Some(format!(
                "{kind} {} {}:{}",
                body["location_name"].as_str()?,
                body["host"].as_str().unwrap_or("-"),
                body["port"]
            ))
        })
        .collect()
}
