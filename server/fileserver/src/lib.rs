//! The file server: a content-addressed blob store, named droplets, and the
//! lifecycle binaries served read-only, over HTTP routes the receptor serves
//! beside its API (behind the same basic auth).
//!
//! It must never store an upload that is over the size limit, that does not
//! match the digest its sender gave, or (for droplets) that is not safe to
//! extract; and it must never serve a file from outside its directories.
//!
//! # Layout
//! - [`store`]: [`BlobStore`], blobs named by their SHA-256, written by
//!   temporary file and rename.
//! - [`droplets`]: [`DropletIndex`], droplet names to blobs and metadata, one
//!   JSON file replaced atomically.
//! - [`archive`]: [`check_archive`] and [`unpack_safely`], the rules that keep
//!   a tarball inside its destination.
//! - [`server`]: [`FileServer`], the three behind one handle.
//! - [`http`]: the routes ([`router`]); the module doc lists the API.
//! - The client, `FileServerClient`, and the wire types (droplets,
//!   digests) live in `lattice_client` and `lattice_models::droplet`, so
//!   `ltc` does not link the server.
//!
//! ```text
//! ltc ─PUT /v1/droplets/NAME (X-Content-Sha256)─▶ http ─▶ FileServer ─stage─▶ droplets/.upload-*
//! executor upload ─POST /v1/droplets/NAME/upload─┘         │ check_archive, commit (rename)
//!                                                            ▼
//! cell download ◀─GET /v1/droplets/NAME/download─── droplets/<sha256> + droplets.json
//! ```

pub mod archive;
pub mod droplets;
pub mod http;
pub mod server;
pub mod store;

pub use archive::{check_archive, unpack_safely, UnsafeArchive};
pub use droplets::{Droplet, DropletIndex, DropletMetadata, DropletName, IndexError};
pub use http::{router, CHECKSUM_HEADER};
pub use server::{FileServer, FileServerConfig, FileServerError, DEFAULT_MAX_UPLOAD_BYTES};
pub use store::{BlobError, BlobInfo, BlobStore, Sha256Hex};
