//! containerd's `config.toml` as a document hpk8s edits in place.
//!
//! containerd's `imports` replace whole sections instead of merging them, so
//! hpk8s edits the operator's file itself: only the keys it manages change,
//! and comments, formatting and every other key survive. Both schemas in use
//! are understood: `version = 2` (containerd 1.6/1.7, CRI plugin
//! `io.containerd.grpc.v1.cri`) and `version = 3` (containerd 2.x, CRI split
//! into `io.containerd.cri.v1.runtime` and `io.containerd.cri.v1.images`).
//!
//! `containerd config dump` accepts wrong types and misspelled keys, so the
//! keys hpk8s touches are type-checked when read, and the edited text is
//! parsed again and checked to say what was wanted before it is written.

use std::collections::BTreeMap;

use crate::error::class::classify;
use toml_edit::{Document, DocumentMut, InlineTable, Item, Table, Value};

/// The runtime type of runc and of the NVIDIA runtime (a runc wrapper).
pub const RUNC_V2: &str = "io.containerd.runc.v2";
/// Where the CNI plugins live: flannel's init container installs its
/// plugin here, the `kubernetes-cni` package and the mirror source the
/// reference plugins. Debian's containerd package ships `/usr/lib/cni`.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
/// Name of the runc runtime in containerd's default config.
pub const RUNC: &str = "runc";
/// Name hpk8s gives the NVIDIA runtime (the NVIDIA Container Toolkit's too).
pub const NVIDIA: &str = "nvidia";

/// Which schema a config file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// `version = 2`: containerd 1.6 and 1.7.
    V2,
    /// `version = 3`: containerd 2.x.
    V3,
}

impl Schema {
    /// The table holding `default_runtime_name` and `runtimes`.
    fn runtime_table(self) -> [&'static str; 3] {
        match self {
            Schema::V2 => ["plugins", "io.containerd.grpc.v1.cri", "containerd"],
            Schema::V3 => ["plugins", "io.containerd.cri.v1.runtime", "containerd"],
        }
    }

    /// The table and key holding the sandbox (pause) image.
    fn sandbox_image(self) -> (&'static [&'static str], &'static str) {
        match self {
            Schema::V2 => (&["plugins", "io.containerd.grpc.v1.cri"], "sandbox_image"),
            Schema::V3 => (
                &["plugins", "io.containerd.cri.v1.images", "pinned_images"],
                "sandbox",
            ),
        }
    }

    /// The CRI table holding `bin_dir` (and, 2.1+, `bin_dirs`).
    fn cni_table(self) -> [&'static str; 3] {
        match self {
            Schema::V2 => ["plugins", "io.containerd.grpc.v1.cri", "cni"],
            Schema::V3 => ["plugins", "io.containerd.cri.v1.runtime", "cni"],
        }
    }

    /// Plugin names that, listed in `disabled_plugins`, switch off the CRI
    /// (Docker's `containerd.io` package ships `disabled_plugins = ["cri"]`).
    fn cri_plugins(self) -> &'static [&'static str] {
        match self {
            Schema::V2 => &["cri", "io.containerd.grpc.v1.cri"],
            Schema::V3 => &[
                "cri",
                "io.containerd.grpc.v1.cri",
                "io.containerd.cri.v1.runtime",
                "io.containerd.cri.v1.images",
            ],
        }
    }

    fn runtimes(self) -> Vec<&'static str> {
        let mut p = self.runtime_table().to_vec();
        p.push("runtimes");
        p
    }

    fn runtime(self, name: &str) -> Vec<&str> {
        let mut p = self.runtimes();
        p.push(name);
        p
    }
}

/// What hpk8s wants containerd's config to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Data root; `None` leaves `root` as it is.
    pub root: Option<String>,
    /// Sandbox (pause) image.
    pub sandbox_image: String,
    /// NVIDIA runtime binary: `Some` configures runtime `nvidia` and makes it
    /// the default; `None` makes runc the default again if it was `nvidia`.
    pub nvidia_runtime: Option<String>,
}

/// A runtime's managed keys as found in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtime {
    /// `runtime_type`.
    pub runtime_type: Option<String>,
    /// `options.BinaryName`.
    pub binary_name: Option<String>,
    /// `options.SystemdCgroup`.
    pub systemd_cgroup: Option<bool>,
}

/// The keys hpk8s manages, as found in a file (absent keys are `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Schema of the file.
    pub schema: Schema,
    /// Top-level `root`.
    pub root: Option<String>,
    /// Sandbox image.
    pub sandbox_image: Option<String>,
    /// `default_runtime_name`.
    pub default_runtime: Option<String>,
    /// Runtimes by name (only `runc` and `nvidia` have their keys read).
    pub runtimes: BTreeMap<String, Runtime>,
    /// Whether `disabled_plugins` switches the CRI off.
    pub cri_disabled: bool,
    /// `imports`: files containerd merges over this one.
    pub imports: Vec<String>,
    /// The CRI's `cni.bin_dir`.
    pub cni_bin_dir: Option<String>,
    /// The CRI's `cni.bin_dirs` (containerd 2.1+).
    pub cni_bin_dirs: Option<Vec<String>>,
}

/// What is wrong with a config document. Messages name the key and line.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The text is not TOML.
    #[error(
        "line {line}: not valid TOML: {message}; fix it, or move the file away to start from `containerd config default`"
    )]
    Syntax {
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
    /// A schema version hpk8s cannot edit.
    #[error(
        "unsupported config schema ({found}); hpk8s edits `version = 2` (containerd 1.6/1.7) and `version = 3` (containerd 2.x): convert the file with `containerd config migrate`"
    )]
    Schema {
        /// What the file declares.
        found: String,
    },
    /// A key hpk8s manages has a value of the wrong type.
    #[error("line {line}: `{key}` must be {expected}, found {found}")]
    WrongType {
        /// 1-based line (0 when unknown).
        line: usize,
        /// Dotted key.
        key: String,
        /// The type containerd expects.
        expected: &'static str,
        /// The type found.
        found: String,
    },
    /// `default_runtime_name` names a runtime that is not defined.
    #[error(
        "line {line}: `{key}` = \"{name}\" but no runtime `{name}` is defined under `{runtimes}`; define it or remove the key"
    )]
    UnknownDefaultRuntime {
        /// 1-based line.
        line: usize,
        /// Dotted key of `default_runtime_name`.
        key: String,
        /// The runtime it names.
        name: String,
        /// Dotted key of the runtimes table.
        runtimes: String,
    },
    /// The edited document does not say what was wanted (a bug in hpk8s).
    #[error(
        "the edited config would not hold: {message}; nothing was written (this is a bug in hpk8s, please report it)"
    )]
    Produced {
        /// What does not hold.
        message: String,
    },
}

classify!(EditError {
    Syntax { .. } => Precondition "containerd_config_syntax";
    Schema { .. } => Precondition "containerd_config_schema";
    WrongType { .. } => Precondition "containerd_config_wrong_type";
    UnknownDefaultRuntime { .. } => Precondition "containerd_unknown_default_runtime";
    Produced { .. } => Internal "containerd_edit_bug";
});

/// A parsed config file, ready to be edited.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    doc: DocumentMut,
    settings: Settings,
    /// The file has no `version` and no plugin sections: it is declared
    /// `version = 2`, which reads the same.
    declare_version: bool,
}

impl ConfigFile {
    /// Parses and type-checks config text.
    pub fn parse(text: &str) -> Result<ConfigFile, EditError> {
        let parsed = Document::parse(text.to_string()).map_err(|e| EditError::Syntax {
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
            message: e.message().lines().next().unwrap_or("").trim().to_string(),
        })?;
        let reader = Reader {
            root: parsed.as_item(),
            text,
        };
        let (schema, declare_version) = reader.schema()?;
        let settings = reader.settings(schema)?;
        Ok(ConfigFile {
            doc: parsed.into_mut(),
            settings,
            declare_version,
        })
    }

    /// The parsed document.
    pub fn document(&self) -> &DocumentMut {
        &self.doc
    }

    /// The managed keys as read.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Edits the document to say what is `wanted`; returns the dotted keys
    /// that changed.
    pub fn apply(&mut self, wanted: &Wanted) -> Result<Vec<String>, EditError> {
        let schema = self.settings.schema;
        let mut changed = Vec::new();
        if self.settings.cri_disabled
            && let Some(Item::Value(Value::Array(plugins))) = self.doc.get_mut("disabled_plugins")
        {
            plugins.retain(|p| {
                !p.as_str()
                    .is_some_and(|p| schema.cri_plugins().contains(&p))
            });
            changed.push("disabled_plugins".to_string());
        }
        let mut set = |doc: &mut DocumentMut, path: &[&str], key: &str, v: Value, keep: bool| {
            if set_value(doc, path, key, v, keep)? {
                changed.push(dotted(&[path, &[key]].concat()));
            }
            Ok::<(), EditError>(())
        };
        let doc = &mut self.doc;
        if self.declare_version {
            set(doc, &[], "version", Value::from(2), false)?;
        }
        if let Some(root) = &wanted.root {
            set(doc, &[], "root", Value::from(root.as_str()), false)?;
        }
        let runc = schema.runtime(RUNC);
        // A runtime table replaces containerd's built-in default wholesale,
        // so a file that names runc must also give its type.
        set(doc, &runc, "runtime_type", Value::from(RUNC_V2), true)?;
        set(
            doc,
            &[&runc[..], &["options"]].concat(),
            "SystemdCgroup",
            Value::from(true),
            false,
        )?;
        let (table, key) = schema.sandbox_image();
        set(
            doc,
            table,
            key,
            Value::from(wanted.sandbox_image.as_str()),
            false,
        )?;
        // Absent, containerd's default is already CNI_BIN_DIR.
        let cni = schema.cni_table();
        if self.settings.cni_bin_dir.is_some() {
            set(doc, &cni, "bin_dir", Value::from(CNI_BIN_DIR), false)?;
        }
        let runtime_table = schema.runtime_table();
        match &wanted.nvidia_runtime {
            Some(binary) => {
                let nvidia = schema.runtime(NVIDIA);
                let options = [&nvidia[..], &["options"]].concat();
                set(doc, &nvidia, "runtime_type", Value::from(RUNC_V2), false)?;
                set(
                    doc,
                    &options,
                    "BinaryName",
                    Value::from(binary.as_str()),
                    false,
                )?;
                set(doc, &options, "SystemdCgroup", Value::from(true), false)?;
                set(
                    doc,
                    &runtime_table,
                    "default_runtime_name",
                    Value::from(NVIDIA),
                    false,
                )?;
            }
            None if self.settings.default_runtime.as_deref() == Some(NVIDIA) => {
                set(
                    doc,
                    &runtime_table,
                    "default_runtime_name",
                    Value::from(RUNC),
                    false,
                )?;
            }
            None => {}
        }
        if let Some(dirs) = &self.settings.cni_bin_dirs
            && !dirs.iter().any(|d| d == CNI_BIN_DIR)
            && let Some(Item::Value(Value::Array(list))) =
                table_at(self.doc.as_item_mut(), &cni)?.get_mut("bin_dirs")
        {
            let literal = is_literal(list.get(0));
            list.insert_formatted(0, quoted(Value::from(CNI_BIN_DIR), literal));
            list.fmt();
            changed.push(dotted(&[&cni[..], &["bin_dirs"]].concat()));
        }
        Ok(changed)
    }

    /// The document as text.
    pub fn render(&self) -> String {
        self.doc.to_string()
    }
}

/// Parses `text` (what is about to be written) and checks that it says what
/// is `wanted`: the last line of defence before a node's container runtime
/// is restarted on a config hpk8s produced.
pub fn verify(text: &str, wanted: &Wanted) -> Result<Settings, EditError> {
    let produced = |e: EditError| EditError::Produced {
        message: e.to_string(),
    };
    let doc = ConfigFile::parse(text).map_err(produced)?;
    let s = doc.settings;
    let fail = |message: String| Err(EditError::Produced { message });
    if doc.declare_version {
        return fail("no `version`".into());
    }
    if let Some(root) = &wanted.root
        && s.root.as_ref() != Some(root)
    {
        return fail(format!("root is {:?}, wanted {root:?}", s.root));
    }
    if s.sandbox_image.as_ref() != Some(&wanted.sandbox_image) {
        return fail(format!("sandbox image is {:?}", s.sandbox_image));
    }
    let runc = s.runtimes.get(RUNC).cloned().unwrap_or_default();
    if runc.systemd_cgroup != Some(true) || runc.runtime_type.is_none() {
        return fail(format!("runc is {runc:?}"));
    }
    if s.cri_disabled {
        return fail("the CRI plugin is disabled".into());
    }
    if s.cni_bin_dir.as_deref().is_some_and(|d| d != CNI_BIN_DIR)
        || s.cni_bin_dirs
            .as_ref()
            .is_some_and(|d| !d.iter().any(|d| d == CNI_BIN_DIR))
    {
        return fail(format!(
            "CNI plugins are looked up in {:?} {:?}, not {CNI_BIN_DIR}",
            s.cni_bin_dir, s.cni_bin_dirs
        ));
    }
    let default = s.default_runtime.as_deref().unwrap_or(RUNC);
    match &wanted.nvidia_runtime {
        Some(binary) => {
            let nvidia = s.runtimes.get(NVIDIA).cloned().unwrap_or_default();
            let ok = nvidia.binary_name.as_ref() == Some(binary)
                && nvidia.systemd_cgroup == Some(true)
                && nvidia.runtime_type.as_deref() == Some(RUNC_V2)
                && default == NVIDIA;
            if !ok {
                return fail(format!(
                    "nvidia runtime is {nvidia:?}, default runtime {default}"
                ));
            }
        }
        None if default == NVIDIA => return fail("nvidia is still the default runtime".into()),
        None => {}
    }
    Ok(s)
}

/// Reads typed values out of a parsed document, naming key and line when a
/// value has the wrong type.
struct Reader<'a> {
    root: &'a Item,
    text: &'a str,
}

impl<'a> Reader<'a> {
    fn line(&self, item: &Item) -> usize {
        item.span()
            .map(|s| line_of(self.text, s.start))
            .unwrap_or(0)
    }

    fn wrong(&self, path: &[&str], item: &Item, expected: &'static str) -> EditError {
        EditError::WrongType {
            line: self.line(item),
            key: dotted(path),
            expected,
            found: item.type_name().to_string(),
        }
    }

    /// The item at `path`, if present; every table on the way must be a table.
    fn get(&self, path: &[&str]) -> Result<Option<&'a Item>, EditError> {
        let mut item = self.root;
        for (i, key) in path.iter().enumerate() {
            let table = item
                .as_table_like()
                .ok_or_else(|| self.wrong(&path[..i], item, "a table"))?;
            match table.get(key) {
                Some(next) if !next.is_none() => item = next,
                _ => return Ok(None),
            }
        }
        Ok(Some(item))
    }

    fn string(&self, path: &[&str]) -> Result<Option<String>, EditError> {
        match self.get(path)? {
            None => Ok(None),
            Some(item) => item
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| self.wrong(path, item, "a string")),
        }
    }

    fn boolean(&self, path: &[&str]) -> Result<Option<bool>, EditError> {
        match self.get(path)? {
            None => Ok(None),
            Some(item) => item
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(path, item, "a boolean (true or false)")),
        }
    }

    /// An array of strings; empty when absent.
    fn strings(&self, path: &[&str]) -> Result<Vec<String>, EditError> {
        let Some(item) = self.get(path)? else {
            return Ok(Vec::new());
        };
        let wrong = || self.wrong(path, item, "an array of strings");
        item.as_array()
            .ok_or_else(wrong)?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(wrong))
            .collect()
    }

    fn schema(&self) -> Result<(Schema, bool), EditError> {
        match self.get(&["version"])? {
            None if self.get(&["plugins"])?.is_none() => Ok((Schema::V2, true)),
            None => Err(EditError::Schema {
                found: "no `version` key, which containerd reads as version 1".into(),
            }),
            Some(item) => match item.as_integer() {
                Some(2) => Ok((Schema::V2, false)),
                Some(3) => Ok((Schema::V3, false)),
                Some(v) => Err(EditError::Schema {
                    found: format!("version = {v}"),
                }),
                None => Err(self.wrong(&["version"], item, "an integer (2 or 3)")),
            },
        }
    }

    fn settings(&self, schema: Schema) -> Result<Settings, EditError> {
        let root = self.string(&["root"])?;
        let (table, key) = schema.sandbox_image();
        let sandbox_image = self.string(&[table, &[key]].concat())?;
        let runtime_table = schema.runtime_table();
        let default_path = [&runtime_table[..], &["default_runtime_name"]].concat();
        let default_runtime = self.string(&default_path)?;

        let runtimes_path = schema.runtimes();
        let mut runtimes = BTreeMap::new();
        if let Some(item) = self.get(&runtimes_path)? {
            let table = item
                .as_table_like()
                .ok_or_else(|| self.wrong(&runtimes_path, item, "a table"))?;
            for (name, _) in table.iter() {
                runtimes.insert(name.to_string(), Runtime::default());
            }
        }
        for name in [RUNC, NVIDIA] {
            if !runtimes.contains_key(name) {
                continue;
            }
            let p = schema.runtime(name);
            let options = [&p[..], &["options"]].concat();
            let runtime = Runtime {
                runtime_type: self.string(&[&p[..], &["runtime_type"]].concat())?,
                binary_name: self.string(&[&options[..], &["BinaryName"]].concat())?,
                systemd_cgroup: self.boolean(&[&options[..], &["SystemdCgroup"]].concat())?,
            };
            runtimes.insert(name.to_string(), runtime);
        }
        if let (Some(name), Some(item)) = (&default_runtime, self.get(&default_path)?) {
            // `nvidia` is checked after editing: hpk8s may be about to
            // define it or to switch back to runc.
            if name != NVIDIA && !runtimes.contains_key(name) && name != RUNC {
                return Err(EditError::UnknownDefaultRuntime {
                    line: self.line(item),
                    key: dotted(&default_path),
                    name: name.clone(),
                    runtimes: dotted(&runtimes_path),
                });
            }
        }

        let cni = schema.cni_table();
        let cni_bin_dir = self.string(&[&cni[..], &["bin_dir"]].concat())?;
        let bin_dirs_path = [&cni[..], &["bin_dirs"]].concat();
        let cni_bin_dirs = match self.get(&bin_dirs_path)? {
            Some(_) => Some(self.strings(&bin_dirs_path)?),
            None => None,
        };
        let disabled = self.strings(&["disabled_plugins"])?;
        let cri_disabled = disabled
            .iter()
            .any(|p| schema.cri_plugins().contains(&p.as_str()));
        let imports = self.strings(&["imports"])?;
        Ok(Settings {
            schema,
            root,
            sandbox_image,
            default_runtime,
            runtimes,
            cri_disabled,
            imports,
            cni_bin_dir,
            cni_bin_dirs,
        })
    }
}

/// The table at `path`, created (implicit, so that empty intermediate tables
/// add no headers) where missing.
fn table_at<'a>(mut item: &'a mut Item, path: &[&str]) -> Result<&'a mut Item, EditError> {
    for (i, key) in path.iter().enumerate() {
        let inline = item.is_inline_table();
        let found = item.type_name();
        let nested_indent = item.as_table().and_then(header_indent).map(|i| i + "  ");
        let table = item
            .as_table_like_mut()
            .ok_or_else(|| EditError::WrongType {
                line: 0,
                key: dotted(&path[..i]),
                expected: "a table",
                found: found.to_string(),
            })?;
        if table.get(key).is_none_or(Item::is_none) {
            let new = if inline {
                Item::Value(Value::InlineTable(InlineTable::new()))
            } else {
                let mut t = Table::new();
                t.set_implicit(true);
                // Laid out like its siblings (containerd's default config
                // indents nested tables), else one step in from its parent.
                let sibling = table
                    .iter()
                    .find_map(|(_, i)| i.as_table().and_then(|t| raw_prefix(t.decor())));
                let prefix = sibling
                    .map(|p| {
                        if p.starts_with('\n') {
                            p
                        } else {
                            format!("\n{p}")
                        }
                    })
                    .or(nested_indent.map(|i| format!("\n{i}")));
                if let Some(prefix) = prefix {
                    t.decor_mut().set_prefix(prefix);
                }
                Item::Table(t)
            };
            table.insert(key, new);
        }
        item = table.get_mut(key).ok_or_else(|| EditError::Produced {
            message: format!("cannot create `{}`", dotted(&path[..=i])),
        })?;
    }
    if item.as_table_like().is_none() {
        return Err(EditError::WrongType {
            line: 0,
            key: dotted(path),
            expected: "a table",
            found: item.type_name().to_string(),
        });
    }
    Ok(item)
}

/// Sets `path.key` to `value` (only when absent if `keep_existing`), keeping
/// the comment and spacing around an existing value. Returns whether the
/// document changed.
fn set_value(
    doc: &mut DocumentMut,
    path: &[&str],
    key: &str,
    value: Value,
    keep_existing: bool,
) -> Result<bool, EditError> {
    let literal_doc = doc.get("root").is_some_and(|v| is_literal(v.as_value()));
    let parent = table_at(doc.as_item_mut(), path)?;
    let key_indent = parent.as_table().and_then(key_indent);
    let table = parent
        .as_table_like_mut()
        .ok_or_else(|| EditError::Produced {
            message: format!("`{}` is not a table", dotted(path)),
        })?;
    match table.get_mut(key) {
        None | Some(Item::None) => {
            table.insert(key, Item::Value(quoted(value, literal_doc)));
            if let (Some(indent), Some(mut k)) = (key_indent, table.key_mut(key)) {
                k.leaf_decor_mut().set_prefix(indent);
            }
            Ok(true)
        }
        Some(Item::Value(old)) if old.type_name() == value.type_name() => {
            if keep_existing || same(old, &value) {
                return Ok(false);
            }
            let decor = old.decor().clone();
            *old = quoted(value, is_literal(Some(old)));
            *old.decor_mut() = decor;
            Ok(true)
        }
        Some(other) => Err(EditError::WrongType {
            line: 0,
            key: dotted(&[path, &[key]].concat()),
            expected: value.type_name(),
            found: other.type_name().to_string(),
        }),
    }
}

/// A decor prefix as written (`"\n        "`).
fn raw_prefix(decor: &toml_edit::Decor) -> Option<String> {
    decor.prefix().and_then(|r| r.as_str()).map(str::to_string)
}

/// The indentation of a table's `[header]` line.
fn header_indent(t: &Table) -> Option<String> {
    let prefix = raw_prefix(t.decor())?;
    let indent = prefix.rsplit('\n').next().unwrap_or("");
    (!indent.is_empty() && indent.chars().all(|c| c == ' ' || c == '\t'))
        .then(|| indent.to_string())
}

/// How a new key in `t` is indented: like the keys already there, else one
/// step in from the header. `None` for dotted tables, whose keys are laid
/// out by their parent.
fn key_indent(t: &Table) -> Option<String> {
    if t.is_dotted() {
        return None;
    }
    t.iter()
        .find_map(|(k, item)| {
            item.is_value()
                .then(|| t.key(k).and_then(|k| raw_prefix(k.leaf_decor())))
                .flatten()
        })
        .or_else(|| header_indent(t).map(|i| i + "  "))
}

/// Whether a value is a string written with single quotes (a TOML literal
/// string, as containerd 2.x's `config default` writes them).
fn is_literal(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(f)) => f
            .as_repr()
            .and_then(|r| r.as_raw().as_str())
            .is_some_and(|r| r.starts_with('\'')),
        _ => false,
    }
}

/// `value`, as a literal string when `literal` and it can be one, so that
/// an edited line looks like its neighbours.
fn quoted(value: Value, literal: bool) -> Value {
    match value.as_str() {
        Some(s) if literal && !s.contains(['\'', '\n', '\r']) => {
            format!("'{s}'").parse().unwrap_or(value)
        }
        _ => value,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.value() == b.value(),
        (Value::Boolean(a), Value::Boolean(b)) => a.value() == b.value(),
        (Value::Integer(a), Value::Integer(b)) => a.value() == b.value(),
        _ => false,
    }
}

/// `plugins."io.containerd.grpc.v1.cri".containerd`: keys as containerd's
/// docs write them.
pub fn dotted(path: &[&str]) -> String {
    path.iter()
        .map(|k| {
            if k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                (*k).to_string()
            } else {
                format!("\"{k}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Wanted {
        Wanted {
            root: None,
            sandbox_image: "registry.k8s.io/pause:3.10.1".into(),
            nvidia_runtime: None,
        }
    }

    #[test]
    fn minimal_v2_file_gets_runc_with_type_and_stays_put_on_second_edit() {
        let text = "version = 2\n# keep me\nfoo = 1\n";
        let mut f = ConfigFile::parse(text).unwrap();
        let changed = f.apply(&wanted()).unwrap();
        assert!(
            changed.iter().any(|k| k.ends_with("SystemdCgroup")),
            "{changed:?}"
        );
        let out = f.render();
        assert!(
            out.starts_with("version = 2\n# keep me\nfoo = 1\n"),
            "{out}"
        );
        let s = verify(&out, &wanted()).unwrap();
        assert_eq!(s.runtimes[RUNC].runtime_type.as_deref(), Some(RUNC_V2));
        let mut again = ConfigFile::parse(&out).unwrap();
        assert!(again.apply(&wanted()).unwrap().is_empty());
        assert_eq!(again.render(), out);
    }

    #[test]
    fn replacing_a_value_keeps_its_trailing_comment() {
        let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = false # operator note\n";
        let mut f = ConfigFile::parse(text).unwrap();
        f.apply(&wanted()).unwrap();
        assert!(
            f.render()
                .contains("  SystemdCgroup = true # operator note\n"),
            "{}",
            f.render()
        );
    }

    #[test]
    fn inline_tables_are_edited_in_place() {
        let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes]\nrunc = { runtime_type = \"io.containerd.runc.v2\", options = { SystemdCgroup = false } }\n";
        let mut f = ConfigFile::parse(text).unwrap();
        f.apply(&wanted()).unwrap();
        let out = f.render();
        assert!(out.contains("options = { SystemdCgroup = true }"), "{out}");
        verify(&out, &wanted()).unwrap();
    }

    #[test]
    fn schema_errors() {
        let e = ConfigFile::parse("[plugins.cri]\nsandbox_image = \"x\"\n").unwrap_err();
        assert!(matches!(e, EditError::Schema { .. }), "{e}");
        let e = ConfigFile::parse("version = 4\n").unwrap_err();
        assert!(e.to_string().contains("version = 4"), "{e}");
        let e = ConfigFile::parse("version = \"2\"\n").unwrap_err();
        assert!(matches!(e, EditError::WrongType { line: 1, .. }), "{e}");
    }

    #[test]
    fn versionless_docker_file_is_declared_v2_and_cri_enabled() {
        let text = "# Docker's file\ndisabled_plugins = [\"cri\"]\n";
        let mut f = ConfigFile::parse(text).unwrap();
        assert!(f.settings().cri_disabled);
        f.apply(&wanted()).unwrap();
        let out = f.render();
        assert!(out.contains("disabled_plugins = []"), "{out}");
        assert!(out.contains("version = 2"), "{out}");
        verify(&out, &wanted()).unwrap();
    }

    #[test]
    fn unknown_default_runtime_is_named() {
        let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"kata\"\n";
        let e = ConfigFile::parse(text).unwrap_err();
        assert!(
            matches!(e, EditError::UnknownDefaultRuntime { line: 3, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("default_runtime_name"), "{e}");
    }

    #[test]
    fn wrong_table_type_is_named() {
        let text =
            "version = 3\n[plugins.\"io.containerd.cri.v1.images\"]\npinned_images = \"pause\"\n";
        let e = ConfigFile::parse(text).unwrap_err();
        assert!(
            matches!(&e, EditError::WrongType { line: 3, key, .. } if key == "plugins.\"io.containerd.cri.v1.images\".pinned_images"),
            "{e}"
        );
    }
}
