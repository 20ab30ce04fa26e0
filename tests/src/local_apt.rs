//! A local, flat apt repository built from real `.deb` files, for nodes
//! without network access: the packages are fetched on this machine with
//! `apt-get download` (from the Debian mirror it is configured with) once
//! and cached, and the repository is served to a node as a `file:` source
//! marked `[trusted=yes]` (the index is not signed).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::mirror::sha256_hex;
use crate::node::CACHE_DIR;

/// Where fetched `.deb` files are kept between runs.
fn deb_cache() -> PathBuf {
    Path::new(CACHE_DIR).join("debs")
}

/// The `.deb` of `package` for this machine's Debian release, fetched once.
#[allow(clippy::disallowed_methods)] // test harness: fetching fixtures with the real apt
fn fetch(package: &str) -> anyhow::Result<PathBuf> {
    let cache = deb_cache();
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let find = || -> anyhow::Result<Option<PathBuf>> {
        Ok(fs::read_dir(&cache)?.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        }))
    };
    if let Some(deb) = find()? {
        return Ok(deb);
    }
    let out = Command::new("apt-get")
        .args(["download", package])
        .current_dir(&cache)
        .output()
        .context("cannot run apt-get download")?;
    if !out.status.success() {
        bail!(
            "apt-get download {package} failed (are the host's package lists current? `apt-get update`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    find()?.with_context(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            cache.display()
        )
    })
}

/// A flat repository (`Packages`, `Release` and the `.deb` files) in `dir`
/// holding `packages`; returns the `sources.list` line for a node that sees
/// `dir` at `node_path`.
#[allow(clippy::disallowed_methods)] // test harness: reading .deb control fields with dpkg-deb
pub fn build(dir: &Path, packages: &[&str], node_path: &str) -> anyhow::Result<String> {
    fs::create_dir_all(dir)?;
    let mut index = String::new();
    for package in packages {
        let deb = fetch(package)?;
        let name = deb
            .file_name()
            .and_then(|n| n.to_str())
            .context("deb file name")?
            .to_string();
        let bytes = fs::read(&deb)?;
        fs::write(dir.join(&name), &bytes)?;
        let control = Command::new("dpkg-deb")
            .arg("--field")
            .arg(&deb)
            .output()
            .context("cannot run dpkg-deb")?;
        if !control.status.success() {
            bail!("dpkg-deb --field {} failed", deb.display());
        }
        index.push_str(String::from_utf8_lossy(&control.stdout).trim_end());
        index.push_str(&format!(
            "\nFilename: ./{name}\nSize: {}\nSHA256: {}\n\n",
            bytes.len(),
            sha256_hex(&bytes)
        ));
    }
    fs::write(dir.join("Packages"), &index)?;
    let release = format!(
        "Origin: hpk8s-tests\nLabel: hpk8s-tests\nSuite: local\nCodename: local\nDescription: packages for nodes without network\nSHA256:\n {} {} Packages\n",
        sha256_hex(index.as_bytes()),
        index.len()
    );
    fs::write(dir.join("Release"), release)?;
    Ok(format!("deb [trusted=yes] file:{node_path} ./\n"))
}

/// Whether `.deb` files can be fetched and indexed here.
pub fn available() -> bool {
    ["apt-get", "dpkg-deb"].iter().all(|p| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).exists()))
    })
}
