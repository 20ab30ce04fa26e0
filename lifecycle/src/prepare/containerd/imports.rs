//! containerd's `imports`: other files laid over the main config when
//! containerd loads it, so what hpk8s sets in the main file is not
//! necessarily what containerd runs with.
//!
//! containerd 1.6/1.7 (schema 2) replaces each plugin table an import names
//! wholesale: a drop-in with any `[plugins."io.containerd.grpc.v1.cri"…]`
//! section (the NVIDIA Container Toolkit writes such a drop-in, a copy of
//! the CRI table taken when it ran) undoes `SystemdCgroup` and the sandbox
//! image of the main file. containerd 2.x (schema 3) merges imports key by
//! key. Either way imports come after the main file and win. A relative
//! name is joined to the importing file's directory (1.6.20 globs a
//! relative pattern from its working directory instead); `*` globs match
//! in sorted order; imports may import, each file is read once.
//!
//! This module finds the imports and computes the effective configuration,
//! so the step can check it and fix the imports it may edit.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table};

use super::config_file::{self, ConfigFile, EditError, Schema, Wanted};
use crate::error::class::classify;
use crate::host::{FsError, Host};

/// The most imports followed (a config is not a file system walk).
const MAX_IMPORTS: usize = 64;
/// The most read from one imported file.
const MAX_IMPORT_BYTES: u64 = 1024 * 1024;

/// An imported file.
#[derive(Debug, Clone)]
pub struct Import {
    /// Host path.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

/// Why the imports could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file could not be read.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// An import named without a glob does not exist: containerd refuses
    /// to start on such a config.
    #[error(
        "{path}: imported by {by} but missing (containerd will not start); create it or remove it from `imports`"
    )]
    Missing {
        /// The missing file.
        path: PathBuf,
        /// The file importing it.
        by: PathBuf,
    },
    /// An imported file is not a config hpk8s can read.
    #[error("{path}: {source}")]
    Document {
        /// The imported file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: EditError,
    },
    /// Imports hpk8s may not edit undo what it sets in the main file.
    #[error(
        "{files}: imported by {main}, they override what hpk8s sets there ({what}); remove the CRI sections (`plugins.\"io.containerd.grpc.v1.cri\"`, `root`, `disabled_plugins`) from them, or keep them as files of {main}'s owner under its directory that nobody else can write so hpk8s may edit them"
    )]
    Overrides {
        /// The imports that set managed keys and may not be edited.
        files: String,
        /// The main config.
        main: PathBuf,
        /// What the effective config gets wrong.
        what: String,
    },
}

classify!(ImportError {
    Fs { 0: e } => via e;
    Missing { .. } => Precondition "containerd_import_missing";
    Document { source, .. } => via source;
    Overrides { .. } => Precondition "containerd_import_overrides";
});

/// The imports of the main config at `main` (host path) whose text is
/// `main_text`, in the order containerd merges them.
pub fn resolve(
    host: &Host,
    main: &Path,
    main_text: &str,
    schema: Schema,
) -> Result<Vec<Import>, ImportError> {
    let mut seen: Vec<PathBuf> = vec![main.to_path_buf()];
    let mut queue: std::collections::VecDeque<(PathBuf, String)> =
        [(main.to_path_buf(), main_text.to_string())].into();
    let mut out = Vec::new();
    while let Some((file, text)) = queue.pop_front() {
        let doc = ConfigFile::parse(&text).map_err(|source| ImportError::Document {
            path: file.clone(),
            source,
        })?;
        let names = doc.settings().imports.clone();
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        for name in names {
            let patterns = if Path::new(&name).is_absolute() {
                vec![PathBuf::from(&name)]
            } else if name.contains('*') && schema == Schema::V2 {
                // containerd 1.6.20 (Debian 12) globs a relative pattern
                // from its working directory, `/` under systemd; later 1.6
                // and 1.7 releases from the importing file's directory.
                // Both are checked.
                vec![dir.join(&name), Path::new("/").join(&name)]
            } else {
                vec![dir.join(&name)]
            };
            let mut paths = Vec::new();
            for pattern in &patterns {
                paths.extend(expand(host, pattern)?);
            }
            for path in paths {
                if seen.contains(&path) || out.len() >= MAX_IMPORTS {
                    continue;
                }
                seen.push(path.clone());
                let bytes = host
                    .read_opt_limited(&path, MAX_IMPORT_BYTES)?
                    .ok_or_else(|| ImportError::Missing {
                        path: path.clone(),
                        by: file.clone(),
                    })?;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                queue.push_back((path.clone(), text.clone()));
                out.push(Import { path, text });
            }
        }
    }
    Ok(out)
}

/// The files a pattern names: itself, or the sorted matches of a `*` in
/// its last component (the only globs containerd's configs use).
fn expand(host: &Host, pattern: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains('*') {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let (prefix, suffix) = name.split_once('*').unwrap_or((&name, ""));
    let mut matches: Vec<PathBuf> = host
        .list_dir(dir)?
        .into_iter()
        .filter(|n| {
            n.starts_with(prefix) && n.ends_with(suffix) && n.len() >= prefix.len() + suffix.len()
        })
        .map(|n| dir.join(n))
        .collect();
    matches.sort();
    Ok(matches)
}

/// What the imports mean for the step.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Imports to rewrite (path, new text) so the effective config holds.
    pub rewrites: Vec<(PathBuf, String)>,
    /// Plan notes.
    pub notes: Vec<String>,
}

/// Checks that the config containerd will run with (the main file at
/// `main`, as hpk8s is about to write it, with its imports laid over it)
/// says what is `wanted`. When an import undoes it, and the import is a
/// regular file of the main file's owner, under the main file's directory,
/// that nobody else can write, hpk8s sets its keys there too; any other
/// import is the operator's or another tool's, and is an error.
pub fn reconcile(
    host: &Host,
    main: &Path,
    main_text: &str,
    wanted: &Wanted,
) -> Result<Reconciled, ImportError> {
    let parse = |path: &Path, text: &str| {
        ConfigFile::parse(text).map_err(|source| ImportError::Document {
            path: path.to_path_buf(),
            source,
        })
    };
    let main_file = parse(main, main_text)?;
    let schema = main_file.settings().schema;
    let mut imports = resolve(host, main, main_text, schema)?;
    let mut out = Reconciled::default();
    if imports.is_empty() {
        return Ok(out);
    }
    let check = |imports: &[Import]| -> Result<Result<(), String>, ImportError> {
        let docs = imports
            .iter()
            .map(|i| parse(&i.path, &i.text).map(|f| f.document().clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let merged = effective(main_file.document(), &docs, schema).to_string();
        Ok(config_file::verify(&merged, wanted)
            .map(|_| ())
            .map_err(|e| match e {
                EditError::Produced { message } => message,
                other => other.to_string(),
            }))
    };
    if check(&imports)?.is_ok() {
        out.notes.push(format!(
            "imports checked: {} file(s) laid over {} keep what hpk8s sets",
            imports.len(),
            main.display()
        ));
        return Ok(out);
    }

    let owner = host
        .ownership(main)
        .map(|o| o.uid)
        .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let dir = main.parent().unwrap_or(Path::new("/"));
    let mut foreign = Vec::new();
    for import in &mut imports {
        let mut file = parse(&import.path, &import.text)?;
        if !touches_managed_keys(file.document()) {
            continue;
        }
        let editable = import.path.starts_with(dir)
            && host
                .ownership(&import.path)
                .is_some_and(|o| o.writable_only_by(owner));
        if !editable {
            foreign.push(import.path.display().to_string());
            continue;
        }
        // Only a root the import already sets is overridden there.
        let here = Wanted {
            root: wanted
                .root
                .clone()
                .filter(|_| file.settings().root.is_some()),
            ..wanted.clone()
        };
        let keys = file.apply(&here).map_err(|source| ImportError::Document {
            path: import.path.clone(),
            source,
        })?;
        if !keys.is_empty() {
            out.notes.push(format!(
                "{} (imported) overrides the main file: setting {} there too",
                import.path.display(),
                keys.join(", ")
            ));
            import.text = file.render();
            out.rewrites
                .push((import.path.clone(), import.text.clone()));
        }
    }
    match check(&imports)? {
        Ok(()) => Ok(out),
        Err(what) => Err(ImportError::Overrides {
            files: if foreign.is_empty() {
                imports
                    .iter()
                    .map(|i| i.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                foreign.join(", ")
            },
            main: main.to_path_buf(),
            what,
        }),
    }
}

/// The configuration containerd runs with: `main` with `imports` laid
/// over it as containerd of `schema` does.
pub fn effective(main: &DocumentMut, imports: &[DocumentMut], schema: Schema) -> DocumentMut {
    let mut out = main.clone();
    for import in imports {
        let into = out.as_table_mut();
        for (key, item) in import.as_table().iter() {
            match (key, schema) {
                ("imports" | "version", _) => {}
                // 1.x: each plugin table replaces the main file's whole.
                ("plugins", Schema::V2) => {
                    let plugins = into
                        .entry("plugins")
                        .or_insert_with(|| Item::Table(Table::new()));
                    if let (Some(to), Some(from)) =
                        (plugins.as_table_like_mut(), item.as_table_like())
                    {
                        for (id, table) in from.iter() {
                            to.insert(id, table.clone());
                        }
                    }
                }
                (_, Schema::V2) => match (into.get_mut(key), item) {
                    // Slices are appended (disabled_plugins, required_plugins).
                    (
                        Some(Item::Value(toml_edit::Value::Array(to))),
                        Item::Value(toml_edit::Value::Array(from)),
                    ) => {
                        for v in from.iter() {
                            to.push(v.clone());
                        }
                    }
                    (Some(to), from) if to.is_table_like() && from.is_table_like() => {
                        deep_merge(to, from);
                    }
                    _ => {
                        into.insert(key, item.clone());
                    }
                },
                // 2.x: everything merges key by key.
                (_, Schema::V3) => match into.get_mut(key) {
                    Some(to) => deep_merge(to, item),
                    None => {
                        into.insert(key, item.clone());
                    }
                },
            }
        }
    }
    out
}

/// Lays `from` over `into`: tables merge key by key, anything else replaces.
fn deep_merge(into: &mut Item, from: &Item) {
    match (into.as_table_like_mut(), from.as_table_like()) {
        (Some(to), Some(from)) => {
            for (key, item) in from.iter() {
                match to.get_mut(key) {
                    Some(existing) if existing.is_table_like() && item.is_table_like() => {
                        deep_merge(existing, item);
                    }
                    _ => {
                        to.insert(key, item.clone());
                    }
                }
            }
        }
        _ => *into = from.clone(),
    }
}

/// Whether an import sets anything hpk8s manages (a CRI plugin table, the
/// data root, disabled plugins): only then can it undo hpk8s's settings.
pub fn touches_managed_keys(doc: &DocumentMut) -> bool {
    let cri = [
        "io.containerd.grpc.v1.cri",
        "io.containerd.cri.v1.runtime",
        "io.containerd.cri.v1.images",
    ];
    doc.get("root").is_some()
        || doc.get("disabled_plugins").is_some()
        || doc
            .get("plugins")
            .and_then(Item::as_table_like)
            .is_some_and(|p| cri.iter().any(|id| p.get(id).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(t: &str) -> DocumentMut {
        t.parse().unwrap()
    }

    const MAIN: &str = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"pause:3.10\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nSystemdCgroup = true\n";
    const DROP_IN: &str = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\nruntime_type = \"io.containerd.runc.v2\"\n";

    #[test]
    fn schema_2_replaces_plugin_tables_and_schema_3_merges() {
        let v2 = effective(&doc(MAIN), &[doc(DROP_IN)], Schema::V2).to_string();
        assert!(
            !v2.contains("SystemdCgroup"),
            "1.x loses the main file's CRI table: {v2}"
        );
        assert!(!v2.contains("sandbox_image"), "{v2}");
        assert!(v2.contains("nvidia"), "{v2}");
        let v3 = effective(&doc(MAIN), &[doc(DROP_IN)], Schema::V3).to_string();
        assert!(
            v3.contains("SystemdCgroup = true") && v3.contains("nvidia"),
            "{v3}"
        );
        assert!(v3.contains("sandbox_image"), "{v3}");
        assert!(touches_managed_keys(&doc(DROP_IN)));
        assert!(!touches_managed_keys(&doc(
            "version = 2\n[debug]\nlevel = \"info\"\n"
        )));
    }
}
