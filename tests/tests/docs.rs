//! Operator documentation that cannot drift from the code.
//!
//! - `docs/config.example.toml` parses as shipped and with every
//!   `# key = value` line uncommented; uncommented, its values are exactly
//!   the built-in defaults, and it lists every key of every section (asked of
//!   the config loader itself, through its unknown-key message) in the
//!   structs' order.
//! - `docs/configuration.md` has a table row for every key, in order, and
//!   every default it writes as a TOML value is the built-in one.
//! - `docs/exit-codes.md` lists every exit code that an `exit_code()`
//!   implementation in `lifecycle/src` returns, each once, and nothing else
//!   besides the process-level codes.

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
/// Where the `exit_code()` implementations live.
const LIBRARY_SOURCE: &str = "lifecycle/src";
/// Trailing marker of example lines for keys that have no default.
const EXAMPLE_MARK: &str = "# example, default unset";
/// Codes the process itself uses, not any library error: success, anything
/// unexpected, clap's usage errors and Rust's panic code.
const PROCESS_CODES: [u8; 4] = [0, 1, 2, 101];

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
        let is_array_header = commented_array_header(line).is_some();
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
        if d.section == "identity.nodes" {
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
    let mut sections: Vec<String> = accepted_keys("");
    sections.push("identity.nodes".into());
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
    for d in documented.iter().filter(|d| d.section != "identity.nodes") {
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
                .map(|s| s.trim_matches(|c| c == '[' || c == ']').to_string());
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
    let mut sections = accepted_keys("");
    sections.push("identity.nodes".into());
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
            if value.contains('`') || section == "identity.nodes" {
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

/// The literal codes (`=> NN`) in every `fn exit_code(` body of `source`.
fn exit_code_arms(source: &str) -> Vec<u8> {
    let mut codes = Vec::new();
    for (start, _) in source.match_indices("fn exit_code(") {
        let Some(open) = source[start..].find('{').map(|i| start + i) else {
            continue;
        };
        let mut depth = 0usize;
        let mut end = source.len();
        for (i, c) in source[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let body = &source[open..end];
        for (arrow, _) in body.match_indices("=>") {
            let rest = body[arrow + 2..].trim_start();
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let after = rest[digits.len()..].chars().next();
            if !digits.is_empty() && !after.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                codes.push(digits.parse().expect("an exit code fits in u8"));
            }
        }
    }
    codes
}

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

/// `code → where` for every literal exit code in the library source.
fn source_codes() -> BTreeMap<u8, Vec<String>> {
    let mut files = Vec::new();
    rust_files(&workspace_root().join(LIBRARY_SOURCE), &mut files);
    let mut codes: BTreeMap<u8, Vec<String>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        let shown = file
            .strip_prefix(workspace_root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for code in exit_code_arms(&text) {
            codes.entry(code).or_default().push(shown.clone());
        }
    }
    codes
}

/// The codes in the first column of the doc's tables (rows whose first
/// cell is a number), in order.
fn documented_codes(markdown: &str) -> Vec<u8> {
    markdown
        .lines()
        .filter_map(|l| l.trim().strip_prefix('|'))
        .filter_map(|row| row.split('|').next()?.trim().parse().ok())
        .collect()
}

#[test]
fn every_exit_code_in_the_source_is_documented_once() {
    let source = source_codes();
    // A scanner that finds nothing would pass vacuously: the library has
    // about 80 codes, at least one per range.
    assert!(
        source.len() >= 60,
        "only {} codes found: {source:?}",
        source.len()
    );
    for known in [10, 20, 40, 50, 55, 65, 75, 85, 90] {
        assert!(
            source.contains_key(&known),
            "code {known} not found: {source:?}"
        );
    }
    let shared: Vec<_> = source.iter().filter(|(_, at)| at.len() > 1).collect();
    assert!(
        shared.is_empty(),
        "exit codes used by several variants: {shared:?}"
    );

    let doc = documented_codes(&read(EXIT_CODES));
    let mut seen = BTreeSet::new();
    let twice: Vec<u8> = doc.iter().copied().filter(|c| !seen.insert(*c)).collect();
    assert!(
        twice.is_empty(),
        "{EXIT_CODES} lists these codes twice: {twice:?}"
    );

    let missing: Vec<_> = source.iter().filter(|(c, _)| !seen.contains(*c)).collect();
    assert!(
        missing.is_empty(),
        "{EXIT_CODES} lacks these codes (code, file): {missing:?}"
    );
    let stale: Vec<u8> = seen
        .iter()
        .copied()
        .filter(|c| !source.contains_key(c) && !PROCESS_CODES.contains(c))
        .collect();
    assert!(
        stale.is_empty(),
        "{EXIT_CODES} lists codes nothing returns: {stale:?}"
    );
    for c in PROCESS_CODES {
        assert!(
            seen.contains(&c),
            "{EXIT_CODES} lacks process exit code {c}"
        );
    }
}

#[test]
fn exit_code_helpers() {
    let source = r#"
        fn other(&self) -> u8 { match self { X => 99, } }
        pub fn exit_code(&self) -> u8 {
            match self {
                E::A { .. } => 10,
                E::B(e) => e.exit_code(),
                E::C(_) => match x { Y::D => 11, Y::E => 12 },
            }
        }
        fn exit_codes_are_distinct() { let _ = |a| a => 98; }
    "#;
    assert_eq!(exit_code_arms(source), [10, 11, 12]);
    let doc = "| Range | Area |\n|---|---|\n| 10–19 | config |\n\n| Code | Error |\n|--|--|\n| 0 | ok |\n| 12 | `X` |\n";
    assert_eq!(documented_codes(doc), [0, 12]);
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
