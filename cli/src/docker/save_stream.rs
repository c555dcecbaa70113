//! The `docker save` stream cut at its layers, so each host is sent only the layers it lacks.
//!
//! The legacy save format (Docker Engine 20.10-24) is a tar of one directory per layer
//! (`<v1 id>/VERSION`, `json`, `layer.tar`, in that order) plus the image config and
//! `manifest.json`. `docker load` registers the layers in the manifest's order and opens a
//! layer's `layer.tar` only when the engine lacks that layer (by chain ID): a stream without
//! the `layer.tar` of layers the host has loads the same image. A directory is named by its v1
//! ID, which the engine derives from the layer's chain ID and its `json`: [`Splitter`] finds
//! which layer each directory holds by recomputing that ID for the image's chain IDs, so
//! nothing is taken for a layer unless the digest proves it (a directory it cannot place is
//! sent to every host).

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

const BLOCK: usize = 512;

/// Which hosts a piece of the stream goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Every host.
    All,
    /// The `layer.tar` of the image's layer at this index: hosts that lack its chain ID.
    Layer(usize),
}

/// The chain IDs of an image's layers from its diff IDs (`RootFS.Layers`): the first is the
/// first diff ID, each next one `sha256(previous + " " + diff ID)`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match chains.last() {
            None => diff.clone(),
            Some(prev) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{prev} {diff}")))),
        };
        chains.push(next);
    }
    chains
}

/// Cuts a save stream into [`Part`]s as it flows; only headers and the small `json` files are
/// held, layer data passes through in the chunks it came in.
pub struct Splitter {
    chains: Vec<String>,
    /// Layer directory (v1 ID) -> index in `chains`, learnt from each directory's `json`.
    placed: HashMap<String, usize>,
    state: State,
    /// A PAX or GNU long-name header (with its data) that belongs to the next entry.
    pending: Vec<u8>,
    pending_path: Option<String>,
}

enum State {
    Header(Vec<u8>),
    Data {
        part: Part,
        /// Bytes left in this entry, padding included.
        left: u64,
        /// Kept when the entry is meta (a PAX header) or a layer's `json`: (kind, size, bytes).
        keep: Option<(Keep, u64, Vec<u8>)>,
    },
    /// After the end-of-archive blocks: everything else goes to every host.
    End,
}

#[derive(Clone)]
enum Keep {
    Pax,
    LongName,
    Json(String),
}

impl Splitter {
    /// `diff_ids` are the image's, in order. An image with a repeated layer is never cut (its
    /// save links repeated `layer.tar`s to the first, which a host may then lack).
    pub fn new(diff_ids: &[String]) -> Splitter {
        let mut unique = diff_ids.to_vec();
        unique.sort();
        unique.dedup();
        let chains = if unique.len() == diff_ids.len() {
            chain_ids(diff_ids)
        } else {
            Vec::new()
        };
        Splitter {
            chains,
            placed: HashMap::new(),
            state: State::Header(Vec::with_capacity(BLOCK)),
            pending: Vec::new(),
            pending_path: None,
        }
    }

    /// The image's chain IDs, in order (empty when the stream is never cut).
    pub fn chains(&self) -> &[String] {
        &self.chains
    }

    /// The parts `chunk` holds, in order.
    pub fn feed(&mut self, mut chunk: Bytes) -> Vec<(Part, Bytes)> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            match &mut self.state {
                State::End => {
                    out.push((Part::All, chunk.split_to(chunk.len())));
                }
                State::Header(buf) => {
                    let take = (BLOCK - buf.len()).min(chunk.len());
                    buf.extend_from_slice(&chunk.split_to(take));
                    if buf.len() == BLOCK {
                        let header = std::mem::take(buf);
                        self.header(header, &mut out);
                    }
                }
                State::Data { part, left, keep } => {
                    let take = (*left).min(chunk.len() as u64) as usize;
                    let piece = chunk.split_to(take);
                    *left -= take as u64;
                    let part = *part;
                    match keep {
                        Some((Keep::Pax | Keep::LongName, ..)) => self.pending.extend_from_slice(&piece),
                        _ => out.push((part, piece.clone())),
                    }
                    if let Some((_, _, bytes)) = keep.as_mut() {
                        bytes.extend_from_slice(&piece);
                    }
                    if *left == 0 {
                        let done = keep.take();
                        self.state = State::Header(Vec::with_capacity(BLOCK));
                        if let Some((kind, size, bytes)) = done {
                            self.kept(kind, &bytes[..size as usize]);
                        }
                    }
                }
            }
        }
        out
    }

    fn header(&mut self, header: Vec<u8>, out: &mut Vec<(Part, Bytes)>) {
        if header.iter().all(|b| *b == 0) {
            self.flush_pending(Part::All, out);
            out.push((Part::All, Bytes::from(header)));
            self.state = State::End;
            return;
        }
        let size = entry_size(&header);
        let left = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let kind = header[156];
        let path = self.pending_path.take().unwrap_or_else(|| header_path(&header));
        let meta = match kind {
            b'x' => Some(Keep::Pax),
            b'L' => Some(Keep::LongName),
            _ => None,
        };
        if let Some(meta) = meta {
            // Belongs to the next entry: held until that entry's part is known.
            self.pending.extend_from_slice(&header);
            self.state = State::Data {
                part: Part::All,
                left,
                keep: Some((meta, size, Vec::new())),
            };
            self.finish_if_empty();
            return;
        }
        let (dir, file) = path.trim_end_matches('/').split_once('/').unwrap_or((&path, ""));
        let part = match (file, self.placed.get(dir)) {
            ("layer.tar", Some(&index)) => Part::Layer(index),
            _ => Part::All,
        };
        let keep = (file == "json" && matches!(kind, b'0' | 0) && size < 1 << 20 && !self.chains.is_empty())
            .then(|| (Keep::Json(dir.to_string()), size, Vec::new()));
        self.flush_pending(part, out);
        out.push((part, Bytes::from(header)));
        self.state = State::Data { part, left, keep };
        self.finish_if_empty();
    }

    /// An entry without data ends at its header.
    fn finish_if_empty(&mut self) {
        if let State::Data { left: 0, keep, .. } = &mut self.state {
            let done = keep.take();
            self.state = State::Header(Vec::with_capacity(BLOCK));
            if let Some((kind, size, bytes)) = done {
                self.kept(kind, &bytes[..size as usize]);
            }
        }
    }

    fn flush_pending(&mut self, part: Part, out: &mut Vec<(Part, Bytes)>) {
        if !self.pending.is_empty() {
            out.push((part, Bytes::from(std::mem::take(&mut self.pending))));
        }
    }

    fn kept(&mut self, kind: Keep, data: &[u8]) {
        match kind {
            Keep::Pax => self.pending_path = pax_path(data),
            Keep::LongName => {
                self.pending_path = Some(String::from_utf8_lossy(data).trim_end_matches('\0').to_string());
            }
            Keep::Json(dir) => {
                if let Some(index) = layer_of(&dir, data, &self.chains) {
                    self.placed.insert(dir, index);
                }
            }
        }
    }
}

/// Which of `chains` the layer directory `dir` holds: the engine names it
/// `sha256(json without id, parent and (below the top) os, plus layer_id = chain ID and
/// parent = "sha256:" + parent)` with sorted keys (`CreateID` in Docker's image/v1).
fn layer_of(dir: &str, json: &[u8], chains: &[String]) -> Option<usize> {
    let mut fields: BTreeMap<String, Box<serde_json::value::RawValue>> = serde_json::from_slice(json).ok()?;
    fields.remove("id");
    let parent = fields.remove("parent").and_then(|p| serde_json::from_str::<String>(p.get()).ok());
    if let Some(parent) = parent {
        fields.insert("parent".into(), raw(&format!("sha256:{parent}"))?);
    }
    let without_os = {
        let mut f = fields.clone();
        f.remove("os");
        f
    };
    for candidate in [without_os, fields] {
        for (index, chain) in chains.iter().enumerate() {
            let mut f = candidate.clone();
            f.insert("layer_id".into(), raw(chain)?);
            let text = serde_json::to_string(&f).ok()?;
            if hex::encode(Sha256::digest(text.as_bytes())) == dir {
                return Some(index);
            }
        }
    }
    None
}

fn raw(s: &str) -> Option<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(serde_json::to_string(s).ok()?).ok()
}

/// The entry's size: octal digits, or base-256 when the first byte's high bit is set.
fn entry_size(header: &[u8]) -> u64 {
    let field = &header[124..136];
    if field[0] & 0x80 != 0 {
        return field[1..].iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
    }
    let text: String = field.iter().take_while(|b| **b != 0).map(|b| *b as char).collect();
    u64::from_str_radix(text.trim(), 8).unwrap_or(0)
}

/// `prefix/name` of a ustar header.
fn header_path(header: &[u8]) -> String {
    let cstr = |b: &[u8]| String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap_or_default()).to_string();
    let name = cstr(&header[0..100]);
    let prefix = if &header[257..262] == b"ustar" {
        cstr(&header[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// The `path` record of a PAX extended header ("<len> path=<value>\n" records).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .filter_map(|record| record.split_once(' ').map(|(_, kv)| kv))
        .find_map(|kv| kv.strip_prefix("path=").map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer directory's json as Docker 20.10 writes it, and its chain: the directory name is
    /// the digest `CreateID` makes of them (taken from a real `docker save`).
    const JSON: &str = r#"{"id":"070e972a9840138b7dc98b429108c87d5684dc95f94c0bc5dc1e0a3193067025","parent":"ccbee4e5ccf5068436dd58ff08450c230d1c371f075fccadc23e4532d3b8f135","created":"1970-01-01T00:00:00Z","container_config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null},"os":"linux"}"#;
    const DIR: &str = "070e972a9840138b7dc98b429108c87d5684dc95f94c0bc5dc1e0a3193067025";

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Feeds `stream` in `chunk`-byte pieces; what a host lacking every layer but `has` gets.
    fn received(splitter: &mut Splitter, stream: &[u8], chunk: usize, has: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            for (part, bytes) in splitter.feed(Bytes::copy_from_slice(piece)) {
                if !matches!(part, Part::Layer(i) if has.contains(&i)) {
                    out.extend_from_slice(&bytes);
                }
            }
        }
        out
    }

    #[test]
    fn a_layer_directory_is_placed_by_its_v1_id() {
        // The first six diff IDs of that image: the directory holds the sixth layer.
        let diffs: Vec<String> = [
            "d9ef56049ce51fd8e419ade9bbf02a6ff14951c35823ac5dd52351fecacda13b",
            "942ed046983286a1bea1661f845206dc26f3af9362b784e0f46e2e75fc9dbc04",
            "83743ceb8625e5266f1b6e1cc0ce80445df94e92a668e9cba041da8dabfef8e6",
            "4d1c31ece6bbfa5c346537856193be28b579542be0375043b0fd81a95b3300d2",
            "b5817da60e7d7d070f5f5b4c679a79681d4c44a4aae3a593e20708f26026b936",
            "d19beb6314b2d1a35db708885719b5f38a997c3931649b9e5bcd943fe8179c31",
        ]
        .iter()
        .map(|d| format!("sha256:{d}"))
        .collect();
        let chains = chain_ids(&diffs);
        assert_eq!(layer_of(DIR, JSON.as_bytes(), &chains), Some(5));
        // Another layer's chain, or a changed json: not placed.
        assert_eq!(layer_of(DIR, JSON.as_bytes(), &chains[..5]), None);
        assert_eq!(
            layer_of(DIR, JSON.replace("linux", "windows").as_bytes(), &chains),
            Some(5),
            "os is not hashed below the top"
        );
        assert_eq!(
            layer_of(DIR, JSON.replace("\"Tty\":false", "\"Tty\":true").as_bytes(), &chains),
            None
        );
    }

    #[test]
    fn the_stream_is_cut_at_layers_and_joins_back_whole() {
        // Two layers whose directories are named as the engine would name them.
        let diffs = vec![format!("sha256:{:064x}", 1), format!("sha256:{:064x}", 2)];
        let chains = chain_ids(&diffs);
        let json_of = |parent: Option<&str>, chain: &str| -> (String, String) {
            let mut f: BTreeMap<String, Box<serde_json::value::RawValue>> = BTreeMap::new();
            f.insert("created".into(), raw("1970-01-01T00:00:00Z").unwrap());
            if let Some(p) = parent {
                f.insert("parent".into(), raw(&format!("sha256:{p}")).unwrap());
            }
            f.insert("layer_id".into(), raw(chain).unwrap());
            let id = hex::encode(Sha256::digest(serde_json::to_string(&f).unwrap()));
            let parent = parent.map(|p| format!(r#","parent":"{p}""#)).unwrap_or_default();
            (
                id.clone(),
                format!(r#"{{"id":"{id}"{parent},"created":"1970-01-01T00:00:00Z","os":"linux"}}"#),
            )
        };
        let (id0, json0) = json_of(None, &chains[0]);
        let (id1, json1) = json_of(Some(&id0), &chains[1]);
        let layer0 = vec![7u8; 3000];
        let layer1 = vec![9u8; 700];
        let (p0, p1) = (format!("{id0}/layer.tar"), format!("{id1}/layer.tar"));
        let (j0, j1) = (format!("{id0}/json"), format!("{id1}/json"));
        let full = tar_of(&[
            (&format!("{id0}/VERSION"), b"1.0"),
            (&j0, json0.as_bytes()),
            (&p0, &layer0),
            (&format!("{id1}/VERSION"), b"1.0"),
            (&j1, json1.as_bytes()),
            (&p1, &layer1),
            ("manifest.json", b"[]"),
        ]);
        for chunk in [1, 100, 511, 512, 4096, full.len()] {
            // A host with nothing gets the stream unchanged.
            assert_eq!(received(&mut Splitter::new(&diffs), &full, chunk, &[]), full, "chunk {chunk}");
            // A host with the first layer gets a valid tar without its layer.tar.
            let cut = received(&mut Splitter::new(&diffs), &full, chunk, &[0]);
            let mut archive = tar::Archive::new(cut.as_slice());
            let names: Vec<String> = archive
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect();
            assert!(!names.contains(&p0) && names.contains(&p1) && names.contains(&j0), "{names:?}");
            assert_eq!(names.len(), 6);
        }
        // A repeated layer: never cut.
        let repeated = vec![diffs[0].clone(), diffs[0].clone()];
        assert!(Splitter::new(&repeated).chains().is_empty());
    }
}
