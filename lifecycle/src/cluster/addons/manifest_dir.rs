//! The operator's own manifests: every `*.yaml`, `*.yml` and `*.json` file
//! in `addons.manifest_dir`, in file-name order (name them `10-…`, `20-…`),
//! each YAML file possibly holding several `---`-separated documents. A
//! `kind: List` (as `kubectl get -o yaml` writes) is expanded into its items.
//! Everything is read and checked before anything is applied, so a broken
//! file never leaves the cluster half-updated.

use std::path::{Path, PathBuf};

use kube::api::DynamicObject;
use kube::core::GroupVersionKind;
use serde_json::Value;

use super::error::{Error, Result};
use super::objects::Manifest;
use crate::host::Host;

/// The most read from one manifest file.
pub const MAX_MANIFEST_BYTES: u64 = 8 * 1024 * 1024;
/// File name endings read from the directory.
const EXTENSIONS: [&str; 3] = [".yaml", ".yml", ".json"];

/// Reads and parses every manifest under `dir` (a host path); an absent
/// directory holds none.
pub fn read(host: &Host, dir: &Path) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for name in host.list_dir(dir).map_err(Error::ManifestRead)? {
        if name.starts_with('.') || !EXTENSIONS.iter().any(|e| name.ends_with(e)) {
            continue;
        }
        let file = dir.join(&name);
        if !host.path(&file).is_file() {
            continue;
        }
        let Some(bytes) = host
            .read_opt_limited(&file, MAX_MANIFEST_BYTES)
            .map_err(Error::ManifestRead)?
        else {
            continue; // removed while listing
        };
        let text = String::from_utf8_lossy(&bytes);
        out.extend(parse(&file, &text)?);
    }
    Ok(out)
}

/// Parses one file's text (`file` names it in errors and origins).
pub fn parse(file: &Path, text: &str) -> Result<Vec<Manifest>> {
    let json = file.extension().is_some_and(|e| e == "json");
    let docs: Vec<(usize, String)> = if json {
        vec![(1, text.to_string())]
    } else {
        split_documents(text)
    };
    let mut out = Vec::new();
    for (index, doc) in docs {
        let syntax = |message: String| Error::ManifestSyntax {
            file: file.to_path_buf(),
            document: index,
            message: message.lines().next().unwrap_or("").trim().to_string(),
        };
        let value: Value = if json {
            serde_json::from_str(&doc).map_err(|e| syntax(e.to_string()))?
        } else {
            if is_blank(&doc) {
                continue;
            }
            serde_saphyr::from_str(&doc).map_err(|e| syntax(e.to_string()))?
        };
        if value.is_null() {
            continue;
        }
        for item in expand_list(value) {
            out.push(to_manifest(file, index, item)?);
        }
    }
    Ok(out)
}

/// Splits YAML text at document markers (`---` at the start of a line),
/// numbering documents from 1 as a reader counts them: text before the first
/// marker is a document only when it holds something.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs: Vec<String> = vec![String::new()];
    for line in text.lines() {
        let marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if marker {
            // The marker's line stays (as the rest of it), so line numbers
            // in parser messages count from the marker.
            docs.push(line[3..].trim_start().to_string() + "\n");
        } else if line == "..." || line.starts_with("... ") {
            // Document end marker: the next document starts at `---`.
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    let skip_first = docs.len() > 1 && is_blank(&docs[0]);
    docs.into_iter()
        .skip(usize::from(skip_first))
        .enumerate()
        .map(|(i, d)| (i + 1, d))
        .collect()
}

/// Only blank lines, comments and directives (`%YAML`).
fn is_blank(doc: &str) -> bool {
    doc.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l.starts_with('%')
    })
}

fn expand_list(value: Value) -> Vec<Value> {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List")
        && value.get("items").is_some_and(Value::is_array);
    if !is_list {
        return vec![value];
    }
    match value {
        Value::Object(mut m) => match m.remove("items") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn to_manifest(file: &Path, document: usize, value: Value) -> Result<Manifest> {
    let invalid = |what: &str| Error::ManifestInvalid {
        file: file.to_path_buf(),
        document,
        what: what.to_string(),
    };
    if !value.is_object() {
        return Err(invalid("the document is not a mapping"));
    }
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(String::from);
    let api_version = field("apiVersion").ok_or_else(|| invalid("apiVersion is missing"))?;
    let kind = field("kind").ok_or_else(|| invalid("kind is missing"))?;
    if value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(invalid(
            "metadata.name is missing (generateName cannot be applied)",
        ));
    }
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    let object: DynamicObject = serde_json::from_value(value)
        .map_err(|e| invalid(&format!("metadata does not parse: {e}")))?;
    Ok(Manifest {
        origin: origin(file, document),
        gvk: GroupVersionKind::gvk(&group, &version, &kind),
        resource: None,
        object,
    })
}

/// How errors and logs name a manifest document.
fn origin(file: &Path, document: usize) -> String {
    format!(
        "manifest {} document {document}",
        PathBuf::from(file).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_numbered_as_read() {
        let text = "# header\n---\na: 1\n---\n\n---\nb: 2\n...\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!((docs[0].0, docs[0].1.trim()), (1, "a: 1"));
        assert_eq!(docs[2].0, 3);
        assert!(split_documents("a: 1\n---\nb: 2\n")[1].1.contains("b: 2"));
    }

    #[test]
    fn parses_multi_document_yaml_and_lists() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n";
        let m = parse(Path::new("/m/10-a.yaml"), text).unwrap();
        let names: Vec<_> = m.iter().map(Manifest::display_name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(m[1].origin, "manifest /m/10-a.yaml document 2");
    }

    #[test]
    fn errors_name_file_and_document() {
        let e = parse(
            Path::new("/m/20-b.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [unclosed\n",
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::ManifestSyntax { document: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("/m/20-b.yaml document 2"), "{e}");
        let e = parse(
            Path::new("/m/c.json"),
            r#"{"apiVersion": "v1", "kind": "ConfigMap"}"#,
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::ManifestInvalid { document: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("metadata.name"), "{e}");
    }
}
