//! The NVIDIA container toolkit's own config: which requests for GPUs the
//! NVIDIA runtime honours. With the device plugin's `volume-mounts`
//! strategy, the runtime must read the per-GPU mounts and ignore
//! `NVIDIA_VISIBLE_DEVICES` in unprivileged containers, or any image that
//! sets it to `all` (CUDA base images do) gets every GPU of the node.
//!
//! Both keys are top-level in the file (before `[nvidia-container-cli]`);
//! every other key and comment stays as the toolkit or the operator left it.

use toml_edit::{DocumentMut, Item, Value};

use super::config_file::{EditError, line_of};
use crate::config::DeviceListStrategy;
use crate::error::class::classify;
use crate::host::{FileMode, FsError, Host};
use crate::plan::Change;

/// The toolkit's config file.
pub const CONFIG: &str = "/etc/nvidia-container-runtime/config.toml";
/// Honour `NVIDIA_VISIBLE_DEVICES` in unprivileged containers (toolkit default `true`).
pub const ENVVAR_WHEN_UNPRIVILEGED: &str = "accept-nvidia-visible-devices-envvar-when-unprivileged";
/// Read the device plugin's per-GPU mounts (toolkit default `false`).
pub const AS_VOLUME_MOUNTS: &str = "accept-nvidia-visible-devices-as-volume-mounts";
/// The most read of the file.
const MAX_BYTES: u64 = 1024 * 1024;

/// Why the toolkit's config cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum ToolkitError {
    /// The file could not be read.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The file is not TOML, or a key has the wrong type.
    #[error("{CONFIG}: {0}; fix the file (`nvidia-ctk config default` prints a fresh one)")]
    Document(#[source] EditError),
}

classify!(ToolkitError {
    Fs { 0: e } => via e;
    Document { .. } => Precondition "nvidia_toolkit_config_invalid";
});

/// The write that makes the toolkit match `strategy`, if one is needed.
/// For `envvar` a file that does not set the keys is left alone (the
/// toolkit's defaults are that strategy); keys set otherwise (an earlier
/// `volume-mounts`) are put back to the defaults.
pub fn plan(host: &Host, strategy: DeviceListStrategy) -> Result<Option<Change>, ToolkitError> {
    let text = match host.read_opt_limited(CONFIG, MAX_BYTES)? {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => String::new(),
    };
    let parsed = toml_edit::Document::parse(text.clone()).map_err(|e| {
        ToolkitError::Document(EditError::Syntax {
            line: e.span().map(|s| line_of(&text, s.start)).unwrap_or(0),
            message: e.message().lines().next().unwrap_or("").trim().to_string(),
        })
    })?;
    let wanted = match strategy {
        DeviceListStrategy::Envvar => [(ENVVAR_WHEN_UNPRIVILEGED, true), (AS_VOLUME_MOUNTS, false)],
        DeviceListStrategy::VolumeMounts => {
            [(ENVVAR_WHEN_UNPRIVILEGED, false), (AS_VOLUME_MOUNTS, true)]
        }
    };
    // Lines of the keys as read (spans are lost once the document is edited).
    let lines: Vec<usize> = wanted
        .iter()
        .map(|(key, _)| {
            parsed
                .get(key)
                .and_then(Item::span)
                .map(|s| line_of(&text, s.start))
                .unwrap_or(0)
        })
        .collect();
    let mut doc: DocumentMut = parsed.into_mut();
    let mut changed = false;
    for ((key, value), line) in wanted.into_iter().zip(lines) {
        let current = doc.get(key);
        let matches = match current {
            None => strategy == DeviceListStrategy::Envvar,
            Some(item) => match item.as_bool() {
                Some(v) => v == value,
                None => {
                    return Err(ToolkitError::Document(EditError::WrongType {
                        line,
                        key: key.into(),
                        expected: "a boolean (true or false)",
                        found: item.type_name().into(),
                    }));
                }
            },
        };
        if !matches {
            match doc.get_mut(key).and_then(Item::as_value_mut) {
                Some(v) => {
                    let decor = v.decor().clone();
                    *v = Value::from(value);
                    *v.decor_mut() = decor;
                }
                None => {
                    doc.insert(key, toml_edit::value(value));
                }
            }
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    Ok(Change::write_file(
        host,
        CONFIG,
        doc.to_string(),
        FileMode::CONFIG,
        false,
    )?)
}
