//! Operator documentation that cannot drift from the code.
//!
//! - `docs/config.example.toml` parses as shipped and with every
//!   `# key = value` line uncommented; uncommented, its values are exactly
//!   the built-in defaults, and it lists every key of every section (asked of
//!   the config loader itself, through its unknown-key message) in the
//!   structs' order.
//! - `docs/configuration.md` has a table row for every key, in order, and
//!   every default it writes as a TOML value is the built-in one.
//! - `docs/exit-codes.md` lists every exit class, and every error kind of
//!   the library once, under its class; the table from the old exit codes
//!   names kinds that exist.
//! - Every `` `hpk8s WORD` `` a doc, script, unit or library message names
//!   is a subcommand of the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use harness::workspace_root;
use lifecycle::config::{Config, ConfigError};

/// The example config, relative to the workspace root.
const EXAMPLE: &str = "docs/config.example.toml";
/// The configuration reference, relative to the workspace root.
const REFERENCE: &str = "docs/configuration.md";
/// The exit-code table, relative to the workspace root.
const EXIT_CODES: &str = "docs/exit-codes.md";
/// Where the library's error types live.
const LIBRARY_SOURCE: &str = "lifecycle/src";
/// Trailing marker of example lines for keys that have no default.
const EXAMPLE_MARK: &str = "# example, default unset";
/// Error types that are only ever the cause of a classified error (a
/// field of a variant that names its own kind), never returned alone.
/// Top-level sections that are maps of tables (`[groups.<name>]`): their
/// entries' keys are documented by a commented example entry.
const MAPS_OF_TABLES: [&str; 1] = ["groups"];

const CAUSE_ONLY_ERRORS: [&str; 4] = [
    "CidrParseError",
    "DurationError",
    "TicketError",
    "VersionError",
];

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn parse(text: &str, what: &str) -> Config {
    Config::parse(text, Path::new(what)).unwrap_or_else(|e| panic!("{what}: {e}\n---\n{text}"))
}

// ---------------------------------------------------------------------------
// The example config.

/// `# name = …` → `name`, for a bare or quoted key. Prose comments never
/// start with a key followed by ` = `.
fn commented_key(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("# ")?;
    let key_len = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"')? + 2
    } else {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))?
    };
    let (key, after) = rest.split_at(key_len);
    (!key.is_empty() && after.starts_with(" = ")).then_some(key)
}

/// `# [[identity.nodes]]` → `identity.nodes`.
fn commented_array_header(line: &str) -> Option<&str> {
    line.strip_prefix("# ")?
        .trim()
        .strip_prefix("[[")?
        .strip_suffix("]]")
        .map(str::trim)
}

/// `# [groups.gpu]` → `groups` (a commented example table of a map of
/// tables, whose entries all document the same keys).
fn commented_map_entry_header(line: &str) -> Option<&str> {
    let inner = line
        .strip_prefix("# [")?
        .trim_end()
        .strip_suffix(']')
        .filter(|i| !i.starts_with('['))?;
    inner.split_once('.').map(|(map, _)| map)
}

/// The section name under which a map of tables' entries are documented.
fn map_entries(map: &str) -> String {
    format!("{map}.*")
}

/// `[identity]` → `identity` (a live table header).
fn live_header(line: &str) -> Option<&str> {
    let l = line.trim();
    l.strip_prefix('[')?
        .trim_start_matches('[')
        .split(']')
        .next()
        .map(str::trim)
}

/// One documented key: its section (`identity.nodes` inside the example
/// node tables), its name, and whether it is an example rather than a default.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DocumentedKey {
    section: String,
    key: String,
    example: bool,
}

/// Walks the example: every line, with the key it documents (if any), and
/// whether that line belongs to an example (a commented `[[…]]` block or a
/// line marked [`EXAMPLE_MARK`]).
fn walk(text: &str) -> Vec<(&str, Option<DocumentedKey>)> {
    let mut section = String::new();
    let mut array: Option<String> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('[') {
            section = live_header(line).unwrap_or_default().to_string();
            array = None;
            out.push((line, None));
        } else if let Some(map) = commented_map_entry_header(line) {
            array = Some(map_entries(map));
            out.push((line, None));
        } else if let Some(name) = commented_array_header(line) {
            // The array itself is a key of its parent table.
            let (parent, key) = name.rsplit_once('.').unwrap_or(("", name));
            let first = array.as_deref() != Some(name);
            array = Some(name.to_string());
            let doc = first.then(|| DocumentedKey {
                section: parent.to_string(),
                key: key.to_string(),
                example: true,
            });
            out.push((line, doc));
        } else if let Some(key) = commented_key(line) {
            out.push((
                line,
                Some(DocumentedKey {
                    section: array.clone().unwrap_or_else(|| section.clone()),
                    key: key.trim_matches('"').to_string(),
                    example: array.is_some() || line.contains(EXAMPLE_MARK),
                }),
            ));
        } else {
            out.push((line, None));
        }
    }
    out
}

/// The example with its `# key = value` lines uncommented: only the defaults,
/// or the examples (the `[[…]]` blocks and keys without a default) as well.
fn uncomment(text: &str, with_examples: bool) -> String {
    let mut out = String::new();
    for (line, doc) in walk(text) {
        let is_array_header =
            commented_array_header(line).is_some() || commented_map_entry_header(line).is_some();
        let uncommented = match &doc {
            Some(d) => !d.example || with_examples,
            None => is_array_header && with_examples,
        };
        out.push_str(if uncommented { &line[2..] } else { line });
        out.push('\n');
    }
    out
}

fn documented_keys(text: &str) -> Vec<DocumentedKey> {
    walk(text).into_iter().filter_map(|(_, d)| d).collect()
}

/// The keys the loader accepts in `section` (`""` for the top level), in the
/// struct's order, taken from its unknown-key message.
fn accepted_keys(section: &str) -> Vec<String> {
    let header = match section {
        "" => String::new(),
        "identity.nodes" => "[[identity.nodes]]\n".to_string(),
        s if s.ends_with(".*") => format!("[{}.docs-probe]\n", s.trim_end_matches(".*")),
        s => format!("[{s}]\n"),
    };
    let text = format!("{header}hpk8s_docs_probe = 1\n");
    match Config::parse(&text, Path::new("probe.toml")) {
        Err(ConfigError::UnknownKey { hint, .. }) => {
            let keys: Vec<String> = hint
                .split('`')
                .skip(1)
                .step_by(2)
                .map(String::from)
                .collect();
            assert!(
                !keys.is_empty(),
                "no keys in the hint for [{section}]: {hint}"
            );
            keys
        }
        other => panic!("probing [{section}] did not fail with an unknown key: {other:?}"),
    }
}

/// `section → keys` of a serialized config (absent options are left out).
fn serialized_keys(config: &Config) -> BTreeMap<String, BTreeSet<String>> {
    let doc = toml_edit::ser::to_document(config).expect("the config serializes");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (section, item) in doc.iter() {
        let table = item
            .as_table_like()
            .unwrap_or_else(|| panic!("`{section}` is not a table"));
        out.insert(
            section.to_string(),
            table.iter().map(|(k, _)| k.to_string()).collect(),
        );
    }
    out
}

#[test]
fn example_as_shipped_is_the_defaults() {
    let text = read(EXAMPLE);
    assert_eq!(parse(&text, EXAMPLE), Config::default());
}

#[test]
fn example_defaults_uncommented_are_the_built_in_defaults() {
    let text = read(EXAMPLE);
    let uncommented = uncomment(&text, false);
    assert_ne!(uncommented, text, "no line was uncommented");
    assert_eq!(
        parse(&uncommented, "config.example.toml (defaults uncommented)"),
        Config::default(),
        "a default in {EXAMPLE} differs from lifecycle/src/config.rs"
    );
}

#[test]
fn example_fully_uncommented_parses_with_example_nodes() {
    let text = read(EXAMPLE);
    let uncommented = uncomment(&text, true);
    let config = parse(&uncommented, "config.example.toml (all uncommented)");
    let roles: Vec<&str> = config
        .identity
        .nodes
        .iter()
        .map(|n| n.role.as_str())
        .collect();
    assert!(
        roles.contains(&"controller") && roles.contains(&"worker"),
        "the example nodes should show a controller and a worker: {roles:?}"
    );
    // Every example really sets its key (a typo in an example key would
    // otherwise be rejected above; a key the loader ignores cannot exist).
    let set = serialized_keys(&config);
    for d in documented_keys(&text).iter().filter(|d| d.example) {
        if d.section == "identity.nodes" || d.section.ends_with(".*") {
            continue;
        }
        assert!(
            set.get(&d.section)
                .is_some_and(|keys| keys.contains(&d.key)),
            "example {}.{} is not set by the uncommented example",
            d.section,
            d.key
        );
    }
}

#[test]
fn example_documents_every_key_in_order_and_marks_only_unset_ones_as_examples() {
    let text = read(EXAMPLE);
    let documented = documented_keys(&text);
    let mut sections: Vec<String> = accepted_keys("")
        .into_iter()
        .filter(|s| !MAPS_OF_TABLES.contains(&s.as_str()))
        .collect();
    sections.push("identity.nodes".into());
    sections.extend(MAPS_OF_TABLES.iter().map(|m| map_entries(m)));
    for section in &sections {
        // Each example node repeats the keys; the first shows them all.
        let mut in_doc: Vec<&str> = Vec::new();
        for d in documented.iter().filter(|d| &d.section == section) {
            if !in_doc.contains(&d.key.as_str()) {
                in_doc.push(&d.key);
            }
        }
        assert_eq!(
            in_doc,
            accepted_keys(section),
            "{EXAMPLE}: the keys of [{section}] differ from lifecycle/src/config.rs (missing, extra or out of order)"
        );
    }
    let live_sections: Vec<&str> = text
        .lines()
        .filter_map(|l| l.starts_with('[').then(|| live_header(l)).flatten())
        .collect();
    assert_eq!(
        live_sections,
        accepted_keys(""),
        "{EXAMPLE}: sections out of order"
    );

    // A default is shown as a default, and only a key without one as an
    // example (the example node list's default is empty).
    let defaults = serialized_keys(&Config::default());
    for d in documented
        .iter()
        .filter(|d| d.section != "identity.nodes" && !d.section.ends_with(".*"))
    {
        let has_default = defaults
            .get(&d.section)
            .is_some_and(|keys| keys.contains(&d.key));
        let empty_list = d.key == "nodes" && Config::default().identity.nodes.is_empty();
        assert_eq!(
            d.example,
            !has_default || empty_list,
            "{EXAMPLE}: {}.{} is {} but {} a default",
            d.section,
            d.key,
            if d.example {
                "marked as an example"
            } else {
                "shown as a default"
            },
            if has_default { "has" } else { "has no" }
        );
    }
}

#[test]
fn example_line_helpers() {
    assert_eq!(commented_key("# source = \"auto\""), Some("source"));
    assert_eq!(
        commented_key("# \"net.ipv4.ip_forward\" = \"1\""),
        Some("\"net.ipv4.ip_forward\"")
    );
    assert_eq!(
        commented_key("# Where the cluster topology comes from:"),
        None
    );
    assert_eq!(commented_key("# Required when source = \"mirror\"."), None);
    assert_eq!(commented_key("source = \"auto\""), None);
    assert_eq!(
        commented_array_header("# [[identity.nodes]]"),
        Some("identity.nodes")
    );
    let text =
        "[a]\n# x = 1\n# y = 2  # example, default unset\n# [[a.n]]\n# z = 3\n\n[b]\n# w = 4\n";
    assert_eq!(
        uncomment(text, false),
        "[a]\nx = 1\n# y = 2  # example, default unset\n# [[a.n]]\n# z = 3\n\n[b]\nw = 4\n"
    );
    assert_eq!(
        uncomment(text, true),
        "[a]\nx = 1\ny = 2  # example, default unset\n[[a.n]]\nz = 3\n\n[b]\nw = 4\n"
    );
    let keys: Vec<(String, String, bool)> = documented_keys(text)
        .into_iter()
        .map(|d| (d.section, d.key, d.example))
        .collect();
    let expected = [
        ("a", "x", false),
        ("a", "y", true),
        ("a", "n", true),
        ("a.n", "z", true),
        ("b", "w", false),
    ];
    assert_eq!(
        keys,
        expected.map(|(s, k, e)| (s.to_string(), k.to_string(), e))
    );
}

// ---------------------------------------------------------------------------
// The key tables of the configuration reference.

/// `section → [(key, default cell)]` from the tables under the reference's
/// `### `[section]`` headings, in order.
fn reference_tables(markdown: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in markdown.lines() {
        if line.starts_with('#') {
            section = line
                .strip_prefix("### `[")
                .and_then(|r| r.split('`').next())
                .map(|s| s.trim_matches(|c| c == '[' || c == ']').to_string())
                // `[groups.<name>]`: the entries of a map of tables.
                .map(|s| match s.strip_suffix(".<name>") {
                    Some(map) => map_entries(map),
                    None => s,
                });
            continue;
        }
        let Some(section) = &section else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[0].is_empty() {
            continue;
        }
        if let Some(key) = cells[1].strip_prefix('`').and_then(|k| k.strip_suffix('`')) {
            out.entry(section.clone())
                .or_default()
                .push((key.to_string(), cells[2].to_string()));
        }
    }
    out
}

#[test]
fn reference_tables_list_every_key_with_its_default() {
    let markdown = read(REFERENCE);
    let tables = reference_tables(&markdown);
    let mut sections: Vec<String> = accepted_keys("")
        .into_iter()
        .filter(|s| !MAPS_OF_TABLES.contains(&s.as_str()))
        .collect();
    sections.push("identity.nodes".into());
    sections.extend(MAPS_OF_TABLES.iter().map(|m| map_entries(m)));
    let mut checked = 0;
    for section in &sections {
        let rows = tables.get(section).map(Vec::as_slice).unwrap_or_default();
        let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            accepted_keys(section),
            "{REFERENCE}: the table of [{section}] differs from lifecycle/src/config.rs (missing, extra or out of order)"
        );
        // A default written as one TOML value must be the built-in default.
        for (key, default) in rows {
            let Some(value) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) else {
                continue;
            };
            if value.contains('`') || section == "identity.nodes" || section.ends_with(".*") {
                continue;
            }
            let text = format!("[{section}]\n{key} = {value}\n");
            assert_eq!(
                parse(&text, REFERENCE),
                Config::default(),
                "{REFERENCE}: the default shown for {section}.{key} is not the built-in one"
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} defaults were checked");
}

#[test]
fn reference_table_helper() {
    let md = "## Keys\n### `[a]`: x\n| Key | Default | Meaning |\n|--|--|--|\n| `k` | `1` | m |\n| `l` | unset | m |\n### `a.k`\n| `v` | x | y |\n";
    let t = reference_tables(md);
    assert_eq!(t.len(), 1);
    assert_eq!(
        t["a"],
        [
            ("k".to_string(), "`1`".to_string()),
            ("l".to_string(), "unset".to_string())
        ]
    );
}

// ---------------------------------------------------------------------------
// Exit codes.

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// One kind as `docs/exit-codes.md` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DocumentedKind {
    kind: String,
    class_code: u8,
    refined: bool,
    error: String,
}

/// The classes table (`| code | `name` | …`) and the kinds listed under
/// each `### code `name`` heading.
fn documented_classes_and_kinds(markdown: &str) -> (Vec<(u8, String)>, Vec<DocumentedKind>) {
    let mut classes = Vec::new();
    let mut kinds = Vec::new();
    let mut section: Option<&str> = None;
    let mut class_code: Option<u8> = None;
    for line in markdown.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = Some(h.trim());
            class_code = None;
            continue;
        }
        if let Some(h) = line.strip_prefix("### ") {
            class_code = h.split_whitespace().next().and_then(|c| c.parse().ok());
            continue;
        }
        let Some(row) = line.trim().strip_prefix('|') else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        match (section, class_code) {
            (Some("Classes"), _) => {
                if let (Ok(code), Some(name)) = (cells[0].parse::<u8>(), cells.get(1)) {
                    classes.push((code, name.trim_matches('`').to_string()));
                }
            }
            (Some(s), Some(code)) if s.starts_with("Kinds") => {
                let first = cells[0];
                if let Some(kind) = first.split('`').nth(1) {
                    kinds.push(DocumentedKind {
                        kind: kind.to_string(),
                        class_code: code,
                        refined: first.contains('†'),
                        error: cells
                            .get(1)
                            .map(|e| e.trim_matches('`').to_string())
                            .unwrap_or_default(),
                    });
                }
            }
            _ => {}
        }
    }
    (classes, kinds)
}

#[test]
fn every_error_kind_is_documented_under_its_class_once() {
    use lifecycle::error::class::ExitClass;
    let (classes, documented) = documented_classes_and_kinds(&read(EXIT_CODES));

    // The classes: at most 16, within 1–99, none a code shells already use.
    let class_codes: Vec<u8> = classes.iter().map(|(c, _)| *c).collect();
    for class in ExitClass::ALL {
        assert!(
            classes.contains(&(class.code(), class.name().to_string())),
            "{EXIT_CODES} lacks class {} ({}): {classes:?}",
            class.name(),
            class.code()
        );
        let c = class.code();
        assert!((1..=99).contains(&c) && !(124..=127).contains(&c), "{c}");
    }
    assert!(ExitClass::ALL.len() <= 16);
    let listed: BTreeSet<u8> = class_codes.iter().copied().collect();
    assert_eq!(listed.len(), class_codes.len(), "a class code twice");
    for c in &class_codes {
        assert!(
            *c == 0 || *c == 101 || ExitClass::ALL.iter().any(|k| k.code() == *c),
            "{EXIT_CODES} lists code {c}, which is no class"
        );
    }

    // The kinds: every one the library names, under its class, once.
    let source = lifecycle::error::all_kinds();
    assert!(source.len() >= 100, "only {} kinds", source.len());
    let mut seen = BTreeSet::new();
    let twice: Vec<&str> = source
        .iter()
        .map(|r| r.kind)
        .filter(|k| !seen.insert(*k))
        .collect();
    assert!(twice.is_empty(), "kinds named by two variants: {twice:?}");
    let mut seen = BTreeSet::new();
    let twice: Vec<&str> = documented
        .iter()
        .map(|d| d.kind.as_str())
        .filter(|k| !seen.insert(*k))
        .collect();
    assert!(
        twice.is_empty(),
        "{EXIT_CODES} lists these kinds twice: {twice:?}"
    );
    for row in &source {
        let doc = documented
            .iter()
            .find(|d| d.kind == row.kind)
            .unwrap_or_else(|| {
                panic!(
                    "{EXIT_CODES} lacks kind `{}` ({}::{})",
                    row.kind, row.error, row.variant
                )
            });
        assert_eq!(
            doc.class_code,
            row.class.code(),
            "`{}` is documented under class {} but is {}",
            row.kind,
            doc.class_code,
            row.class.name()
        );
        assert_eq!(doc.refined, row.refined, "`{}`: the † mark", row.kind);
        assert!(
            doc.error.ends_with(&format!(
                "{}::{}",
                row.error.rsplit("::").next().unwrap_or(""),
                row.variant
            )) || doc.error.ends_with(&format!("::{}", row.variant)),
            "`{}` is documented as `{}`, but is {}::{}",
            row.kind,
            doc.error,
            row.error,
            row.variant
        );
    }
    let stale: Vec<&str> = documented
        .iter()
        .map(|d| d.kind.as_str())
        .filter(|k| !source.iter().any(|r| r.kind == *k))
        .collect();
    assert!(
        stale.is_empty(),
        "{EXIT_CODES} lists kinds nothing names: {stale:?}"
    );
}

/// Every error enum of the library is classified (its variants name their
/// kinds) and listed in `lifecycle::error::all_kinds`, unless it is only
/// ever the cause of another error.
#[test]
fn every_error_type_is_classified() {
    let mut files = Vec::new();
    rust_files(&workspace_root().join(LIBRARY_SOURCE), &mut files);
    let listed: BTreeSet<&str> = lifecycle::error::all_kinds()
        .iter()
        .map(|r| r.error)
        .collect();
    let mut found = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !(line.starts_with("#[derive(") && line.contains("thiserror::Error")) {
                continue;
            }
            let Some(name) = lines[i + 1..]
                .iter()
                .find_map(|l| l.strip_prefix("pub enum "))
                .and_then(|l| l.split_whitespace().next())
            else {
                continue;
            };
            found += 1;
            if CAUSE_ONLY_ERRORS.contains(&name) {
                continue;
            }
            let shown = file
                .strip_prefix(workspace_root())
                .unwrap_or(&file)
                .display()
                .to_string();
            assert!(
                text.contains(&format!("classify!({name} {{")),
                "{shown}: error type {name} is not classified"
            );
            // The top-level error only wraps others.
            if name != "Error" || !shown.ends_with("error/mod.rs") {
                assert!(
                    listed.contains(name),
                    "{shown}: {name} is missing from lifecycle::error::all_kinds"
                );
            }
        }
    }
    assert!(found >= 20, "only {found} error types found");
}

#[test]
fn the_old_exit_codes_map_to_kinds_that_exist() {
    let doc = read(EXIT_CODES);
    let section = doc
        .split("## From the old exit codes")
        .nth(1)
        .expect("an old-codes section");
    let kinds: BTreeSet<&str> = lifecycle::error::all_kinds()
        .iter()
        .map(|r| r.kind)
        .collect();
    let mut rows = 0;
    for row in section.lines().filter_map(|l| l.trim().strip_prefix('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Ok(code) = cells[0].parse::<u16>() else {
            continue;
        };
        rows += 1;
        assert!((10..=200).contains(&code), "{code}");
        let named: Vec<&str> = cells[2].split('`').skip(1).step_by(2).collect();
        assert!(!named.is_empty(), "old code {code} maps to no kind");
        for k in named {
            assert!(
                kinds.contains(k),
                "old code {code} maps to unknown kind `{k}`"
            );
        }
    }
    assert!(rows >= 130, "only {rows} old codes mapped");
}

/// The subcommands `hpk8s --help` lists.
#[allow(clippy::disallowed_methods)] // runs the real binary
fn subcommands() -> BTreeSet<String> {
    let out = std::process::Command::new(harness::hpk8s_bin())
        .arg("--help")
        .output()
        .expect("hpk8s --help runs");
    let help = String::from_utf8_lossy(&out.stdout);
    help.split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // Subcommands are indented two spaces; their wrapped help, more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Every `` `hpk8s WORD` `` in the docs, scripts, units and the library's
/// messages, with where it is.
fn mentioned_subcommands() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for dir in [
        "lifecycle/src",
        "agent/src",
        "docs",
        "scripts",
        "systemd",
        "vagrant",
    ] {
        let path = workspace_root().join(dir);
        if path.is_dir() {
            all_files(&path, &mut files);
        }
    }
    for top in ["README.md", "ARCHITECTURE.md"] {
        files.push(workspace_root().join(top));
    }
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let shown = file
            .strip_prefix(workspace_root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for (at, _) in text.match_indices("`hpk8s ") {
            let word: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            // Flags (`hpk8s --help`) are not subcommands.
            if word.starts_with(|c: char| c.is_ascii_lowercase()) {
                out.push((word, shown.clone()));
            }
        }
    }
    out
}

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_subcommand_a_message_or_doc_names_exists() {
    let real = subcommands();
    for expected in [
        "bootstrap",
        "agent",
        "identity",
        "config",
        "generate-new-token",
    ] {
        assert!(
            real.contains(expected),
            "{expected} missing from --help: {real:?}"
        );
    }
    let mentioned = mentioned_subcommands();
    assert!(
        mentioned.len() >= 20,
        "only {} mentions found",
        mentioned.len()
    );
    let unknown: Vec<&(String, String)> = mentioned
        .iter()
        .filter(|(w, _)| !real.contains(w))
        .collect();
    assert!(
        unknown.is_empty(),
        "these name subcommands hpk8s does not have: {unknown:?}"
    );
}

/// The Vagrant cluster's config parses and exchanges the ticket through
/// the synced folder, as `vagrant/Vagrantfile` says.
#[test]
fn vagrant_config_parses_and_uses_the_synced_folder() {
    let config = parse(&read("vagrant/config.toml"), "vagrant/config.toml");
    assert_eq!(
        config.rendezvous.kind,
        lifecycle::config::RendezvousKind::Directory
    );
    let dir = config.rendezvous.directory.expect("rendezvous.directory");
    let vagrantfile = read("vagrant/Vagrantfile");
    assert!(
        vagrantfile.contains(&format!("install -d -m 0700 {}", dir.display())),
        "the Vagrantfile does not create {}",
        dir.display()
    );
    assert_eq!(config.identity.nodes.len(), 3);
}
