//! A connected share and what can be done on it.

use crate::{
    acl::{self, Ace, AceKind},
    error::{Context, ShareError},
    transport::FastTcp,
};
use futures_util::StreamExt;
use secrets::Secret;
use smb::{
    ACE, ACL, AccessAce, AccessMask, AceFlags, AceValue, AclRevision, AdditionalInfo, Connection,
    ConnectionConfig, CreateDisposition, CreateOptions, Dialect, DirAccessMask, Directory,
    FileAccessMask, FileAttributes, FileCreateArgs, FileDispositionInformation,
    FileIdBothDirectoryInformation, FileNetworkOpenInformation, FileRenameInformation, Resource,
    ResourceHandle, SID, SecurityDescriptor, SecurityDescriptorControl, Session, Status, Tree,
    UncPath, connection::EncryptionMode,
};
use std::{
    net::SocketAddr,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// The largest read or write request sent, whatever the server offers. Samba offers 8 MiB, but
/// with smb 0.12 a request that large never completes (its credit charge, 128, exceeds what the
/// client holds, and it waits for credits that do not come); 1 MiB requests pipelined are as fast.
const MAX_REQUEST: usize = 1024 * 1024;

/// `\\server\share[\folder...]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unc {
    pub server: String,
    pub share: String,
    /// Folder inside the share, backslash-separated, empty for the root.
    pub path: String,
}

impl Unc {
    pub fn parse(text: &str) -> Result<Self, ShareError> {
        let t = text.trim().replace('/', "\\");
        let rest = t
            .strip_prefix("\\\\")
            .ok_or_else(|| ShareError::BadUnc(text.to_owned()))?;
        let mut parts = rest.split('\\').filter(|p| !p.is_empty());
        let (Some(server), Some(share)) = (parts.next(), parts.next()) else {
            return Err(ShareError::BadUnc(text.to_owned()));
        };
        Ok(Self {
            server: server.to_owned(),
            share: share.to_owned(),
            path: parts.collect::<Vec<_>>().join("\\"),
        })
    }
}

#[derive(Debug, Clone)]
pub struct ShareConfig {
    /// `\\server\share`; a folder part is ignored here (paths are given per operation).
    pub unc: String,
    /// `DOMAIN\name` or `name@domain`.
    pub username: String,
    pub password: Secret,
    pub port: u16,
    /// Bound on connecting and on each request.
    pub timeout: Duration,
    /// Refuse a session the server will not encrypt (default true).
    pub require_encryption: bool,
    /// Offer encryption at all (default true). With false (and `require_encryption` false) the
    /// session is signed instead, as with a Windows server that encrypts only the shares told
    /// to; the tests use it to run the signed path against a server that would encrypt.
    pub offer_encryption: bool,
    /// How long a directory listing may stay silent before it fails. A stalled listing is an
    /// error, never a short list: callers decide what to delete from listings.
    pub list_idle: Duration,
    /// Write requests in flight per file.
    pub pipeline: usize,
}

impl ShareConfig {
    pub fn new(unc: impl Into<String>, username: impl Into<String>, password: Secret) -> Self {
        Self {
            unc: unc.into(),
            username: username.into(),
            password,
            port: 445,
            timeout: Duration::from_secs(10),
            require_encryption: true,
            offer_encryption: true,
            list_idle: Duration::from_secs(10),
            pipeline: 8,
        }
    }
}

/// Size, times and kind of a file or folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    pub is_dir: bool,
    /// Last write time, in 100 ns intervals since 1601-01-01 (Windows FILETIME).
    pub modified: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    /// Last write time, as [`Meta::modified`]: 100 ns units since 1601 (a FILETIME).
    pub modified: u64,
}

/// How often, and with what pauses, to retry an operation refused because another program holds
/// the file open ([`ShareError::SharingViolation`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all (1: no retry).
    pub attempts: u32,
    /// The pause after the first refusal; it doubles after each one...
    pub first_pause: Duration,
    /// ...up to this.
    pub max_pause: Duration,
}

impl Default for Retry {
    /// 8 attempts over about 16 s: a reader that opened a file without sharing delete access
    /// (a web server streaming it, an antivirus scan) usually lets go within seconds.
    fn default() -> Self {
        Self {
            attempts: 8,
            first_pause: Duration::from_millis(250),
            max_pause: Duration::from_secs(4),
        }
    }
}

impl Retry {
    /// The sum of the pauses between all `attempts`: the longest a retried operation waits.
    pub fn total_pause(&self) -> Duration {
        (1..self.attempts).map(|a| self.pause(a)).sum()
    }

    /// The pause after refusal number `attempt` (1-based).
    pub fn pause(&self, attempt: u32) -> Duration {
        let doubled = self
            .first_pause
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        doubled.min(self.max_pause)
    }
}

/// A lock file held open ([`Share::try_lock`]); the server deletes it when it is released or
/// the session ends.
pub struct Lock {
    resource: Resource,
    /// The lost mark of the connection it was taken over.
    lost: Arc<AtomicBool>,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock").finish_non_exhaustive()
    }
}

impl Lock {
    /// Close the lock file's handle (the server then deletes it). Not waited for on a
    /// connection known lost: the server deletes it when the session ends.
    pub async fn release(self) {
        if !self.lost.load(Ordering::Relaxed) {
            let _ = handle(&self.resource).close().await;
        }
    }
}

/// Owner, group and DACL of a file or folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityInfo {
    pub owner: Option<String>,
    pub group: Option<String>,
    /// The DACL is protected (does not inherit from the parent).
    pub protected: bool,
    pub aces: Vec<Ace>,
}

/// What [`Share::ensure_private_folder`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privacy {
    /// Protected already, nothing inherited: left as it was.
    AlreadyPrivate,
    /// Given the private DACL, for `account` besides SYSTEM and Administrators; `below` files
    /// and folders already in it were reset to inherit it.
    MadePrivate { account: String, below: usize },
}

/// A connected, authenticated share. Holds the connection open until dropped or closed.
pub struct Share {
    connection: Connection,
    _session: Session,
    tree: Tree,
    unc: Unc,
    username: String,
    port: u16,
    timeout: Duration,
    list_idle: Duration,
    pipeline: usize,
    max_write: usize,
    max_read: usize,
    /// Set by the first request that finds the connection lost; see [`Share::is_lost`]. Shared
    /// with the locks taken over it.
    lost: Arc<AtomicBool>,
    /// Set by a request that timed out while the connection still answered others; see
    /// [`Share::had_timeout`].
    timed_out: AtomicBool,
    /// When the connection last received anything (its transport records it).
    heard: Arc<crate::transport::Heard>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("unc", &self.unc)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn handle(r: &Resource) -> &ResourceHandle {
    match r {
        Resource::File(f) => f,
        Resource::Directory(d) => d,
        Resource::Pipe(p) => p,
    }
}

fn norm(path: &str) -> String {
    path.replace('/', "\\").trim_matches('\\').to_owned()
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_owned()
    } else {
        format!("{folder}\\{name}")
    }
}

impl Share {
    fn ctx(&self) -> Context<'_> {
        Context {
            server: &self.unc.server,
            port: self.port,
            share: &self.unc.share,
            user: &self.username,
            timeout: self.timeout,
            lost: Some(&self.lost),
            timed_out: Some(&self.timed_out),
            heard: Some(&self.heard),
        }
    }

    /// Fails at once when an earlier request found this connection lost: on a stalled link
    /// every request would otherwise wait out its own timeout, one file after another.
    fn alive(&self, operation: &str, path: &str) -> Result<(), ShareError> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(self.ctx().already_lost(operation, path));
        }
        Ok(())
    }

    /// Close a handle, unless the connection is known lost: the server drops a session's
    /// handles with it, and waiting here for a close on a stalled link would cost another
    /// timeout. (The handle, dropped still open, sends its close from a background task, which
    /// fails or times out on its own.) A close that finds the link lost marks it so.
    async fn close_handle(&self, h: &ResourceHandle) {
        if self.is_lost() {
            return;
        }
        if let Err(e) = h.close().await {
            let _ = self.fail("close", "", e);
        }
    }

    /// Whether a request on this connection found it lost (then every later one fails at once,
    /// and the caller should connect again).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Whether a request timed out while the connection still answered others. The connection
    /// still works, but the credits of the unanswered request are gone for good (only answers
    /// return them), so a caller that keeps connections should not keep this one.
    pub fn had_timeout(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    fn fail(&self, operation: &str, path: &str, e: smb::Error) -> ShareError {
        self.ctx().classify(operation, path, e)
    }

    /// Resolve the server, open TCP, negotiate SMB 3.1.1 (encrypted unless told otherwise),
    /// log on with NTLM and connect the share — each step with its own error.
    pub async fn connect(config: &ShareConfig) -> Result<Self, ShareError> {
        let unc = Unc::parse(&config.unc)?;
        let ctx = Context {
            server: &unc.server,
            port: config.port,
            share: &unc.share,
            user: &config.username,
            timeout: config.timeout,
            lost: None,
            timed_out: None,
            heard: None,
        };
        let addresses: Vec<SocketAddr> = tokio::time::timeout(
            config.timeout,
            tokio::net::lookup_host((unc.server.as_str(), config.port)),
        )
        .await
        .map_err(|_| ShareError::NameResolution {
            server: unc.server.clone(),
            detail: "DNS did not answer in time".into(),
        })?
        .map_err(|e| ShareError::NameResolution {
            server: unc.server.clone(),
            detail: e.to_string(),
        })?
        .collect();
        let mut transport = FastTcp::new(config.timeout);
        let mut last = String::from("no address");
        let mut connected = false;
        for address in addresses {
            match transport.open(address).await {
                Ok(()) => {
                    connected = true;
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        if !connected {
            return Err(ctx.unreachable(last));
        }
        let heard = transport.heard();
        let mut settings = ConnectionConfig {
            encryption_mode: if config.require_encryption {
                EncryptionMode::Required
            } else if config.offer_encryption {
                EncryptionMode::Allowed
            } else {
                EncryptionMode::Disabled
            },
            // SMB 3.1.1: AES-GCM and pre-authentication integrity (FSx and Windows Server 2016+ speak it).
            min_dialect: Some(Dialect::Smb0311),
            max_dialect: Some(Dialect::Smb0311),
            timeout: Some(config.timeout),
            smb2_only_negotiate: true,
            ..ConnectionConfig::default()
        };
        settings.auth_methods.ntlm = true;
        settings.auth_methods.kerberos = false;
        let connection = Connection::from_transport(
            Box::new(transport),
            &unc.server,
            smb::Guid::generate(),
            settings,
        )
        .await
        .map_err(|e| ctx.classify("negotiate", "", e))?;
        let identity = sspi::AuthIdentity {
            username: sspi::Username::parse(&config.username).map_err(|e| {
                ShareError::LogonFailure {
                    user: format!("{} ({e})", config.username),
                }
            })?,
            password: config.password.expose().to_owned().into(),
        };
        let session = connection
            .authenticate(identity)
            .await
            .map_err(|e| ctx.classify("log on", "", e))?;
        let share_unc = UncPath::from_str(&format!("\\\\{}\\{}", unc.server, unc.share))
            .map_err(|_| ShareError::BadUnc(config.unc.clone()))?;
        let tree = session
            .tree_connect(&share_unc)
            .await
            .map_err(|e| ctx.classify("connect the share", "", e))?;
        let (max_write, max_read) = connection
            .conn_info()
            .map(|i| {
                (
                    i.negotiation.max_write_size as usize,
                    i.negotiation.max_read_size as usize,
                )
            })
            .unwrap_or((64 * 1024, 64 * 1024));
        Ok(Self {
            connection,
            _session: session,
            tree,
            unc,
            username: config.username.clone(),
            port: config.port,
            timeout: config.timeout,
            list_idle: config.list_idle,
            pipeline: config.pipeline.max(1),
            max_write: max_write.clamp(4096, MAX_REQUEST),
            max_read: max_read.clamp(4096, MAX_REQUEST),
            lost: Arc::new(AtomicBool::new(false)),
            timed_out: AtomicBool::new(false),
            heard,
        })
    }

    /// `\\server\share` as connected (no folder).
    pub fn unc(&self) -> String {
        format!("\\\\{}\\{}", self.unc.server, self.unc.share)
    }

    /// The negotiated maximum write size (writes are chunked to it).
    pub fn max_write(&self) -> usize {
        self.max_write
    }

    /// End the connection. Bounded by the request timeout: on a link that takes nothing any
    /// more, the goodbye would otherwise wait for TCP to give up (minutes).
    pub async fn close(self) {
        let _ = tokio::time::timeout(self.timeout, self.connection.close()).await;
    }

    /// `mkdir -p`: create every missing folder of `path`.
    pub async fn create_dir_all(&self, path: &str) -> Result<(), ShareError> {
        self.alive("create the folder", path)?;
        let mut current = String::new();
        for part in norm(path).split('\\').filter(|p| !p.is_empty()) {
            if !current.is_empty() {
                current.push('\\');
            }
            current.push_str(part);
            let args = FileCreateArgs {
                disposition: CreateDisposition::OpenIf,
                attributes: FileAttributes::new().with_directory(true),
                options: CreateOptions::new().with_directory_file(true),
                desired_access: FileAccessMask::new()
                    .with_file_read_attributes(true)
                    .with_synchronize(true),
            };
            let r = self
                .tree
                .create(&current, &args)
                .await
                .map_err(|e| self.fail("create the folder", &current, e))?;
            let is_dir = r.is_dir();
            self.close_handle(handle(&r)).await;
            if !is_dir {
                return Err(ShareError::AlreadyExists {
                    path: format!("{current} (a file, where a folder is needed)"),
                });
            }
        }
        Ok(())
    }

    /// Write `data` as the whole content of `path` (created or overwritten). See
    /// [`Share::write_from`].
    pub async fn write(&self, path: &str, data: &[u8]) -> Result<u64, ShareError> {
        self.write_from(path, data).await
    }

    /// Write everything `reader` yields as the whole content of `path` (created or overwritten)
    /// and return the byte count. The data is streamed: requests of the negotiated maximum size,
    /// up to [`ShareConfig::pipeline`] of them in flight while the next chunks are read, so
    /// memory stays at about `(pipeline + 2) x max_write` whatever the file's size, and the link
    /// is not left idle for a round trip per chunk.
    ///
    /// No flush is sent: once the handle is closed every client sees the data, and making it
    /// durable is the file server's job (FSx replicates synchronously); a flush per file would
    /// cost a round trip each and a quarter of the throughput on small files.
    pub async fn write_from<R>(&self, path: &str, mut reader: R) -> Result<u64, ShareError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        self.alive("write", path)?;
        let path = norm(path);
        let chunk = self.max_write;
        let failed = |detail: String| ShareError::Other {
            operation: format!("write {path}"),
            detail,
        };
        // Read the first chunk before opening anything: most web content fits in one write, and
        // then the create, the write and the close go out as one compounded request, one round
        // trip per file instead of three.
        let mut space = vec![0u8; chunk];
        let filled = fill(&mut reader, &mut space)
            .await
            .map_err(|e| failed(format!("reading the source failed: {e}")))?;
        if filled + COMPOUND_HEADROOM <= chunk {
            return self.write_small(&path, Arc::from(&space[..filled])).await;
        }
        let ended = filled < chunk;
        let first: Arc<[u8]> = Arc::from(&space[..filled]);
        let args = FileCreateArgs::make_overwrite(FileAttributes::new(), CreateOptions::new());
        let file = self
            .tree
            .create(&path, &args)
            .await
            .map_err(|e| self.fail("create the file", &path, e))?
            .unwrap_file();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Arc<[u8]>)>(2);
        let produce = async move {
            if tx.send((0, first)).await.is_err() || ended {
                // The whole source, or the writer failed (its error is reported).
                return Ok(filled as u64);
            }
            let mut offset = filled as u64;
            // One reused read buffer; each chunk is then copied once into the shared buffer the
            // request owns (a memcpy, far cheaper than fresh zeroed pages per chunk).
            loop {
                let filled = fill(&mut reader, &mut space).await?;
                if filled == 0 {
                    break;
                }
                let buf: Arc<[u8]> = Arc::from(&space[..filled]);
                if tx.send((offset, buf)).await.is_err() {
                    break; // The writer failed; its error is reported.
                }
                offset += filled as u64;
                if filled < chunk {
                    break;
                }
            }
            Ok::<u64, std::io::Error>(offset)
        };
        let consume = async {
            let chunks = futures_util::stream::poll_fn(|cx| rx.poll_recv(cx));
            let mut in_flight = chunks
                .map(|(offset, buf)| write_chunk(&file, offset, buf))
                .buffer_unordered(self.pipeline);
            while let Some(r) = in_flight.next().await {
                r?;
            }
            Ok::<(), ChunkError>(())
        };
        let (read, written) = futures_util::future::join(produce, consume).await;
        self.close_handle(&file).await;
        written.map_err(|e| match e {
            ChunkError::Smb(e) => self.fail("write", &path, e),
            ChunkError::ZeroWrite => failed("the server accepted 0 bytes".into()),
        })?;
        read.map_err(|e| failed(format!("reading the source failed: {e}")))
    }

    /// A whole file that fits in one write: create (or overwrite), write and close as one
    /// compounded request. A short write is an error, as the streaming path's zero write is: the
    /// file then holds less than was sent, and the caller (which writes under a temporary name)
    /// does not publish it.
    async fn write_small(&self, path: &str, data: Arc<[u8]>) -> Result<u64, ShareError> {
        let args = FileCreateArgs::make_overwrite(FileAttributes::new(), CreateOptions::new());
        let wanted = data.len();
        let written = self
            .tree
            .write_whole_file(path, &args, data)
            .await
            .map_err(|e| self.fail("write", path, e))?;
        if written != wanted {
            return Err(ShareError::Other {
                operation: format!("write {path}"),
                detail: format!("the server accepted {written} of {wanted} bytes"),
            });
        }
        Ok(wanted as u64)
    }

    /// Write many files, up to `parallel` at a time; the results come back in input order.
    pub async fn write_many(
        &self,
        files: &[(String, Vec<u8>)],
        parallel: usize,
    ) -> Vec<Result<(), ShareError>> {
        write_many_on(&[self], files, parallel).await
    }

    /// The whole content of `path`.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>, ShareError> {
        self.alive("read", path)?;
        let path = norm(path);
        let args =
            FileCreateArgs::make_open_existing(FileAccessMask::new().with_generic_read(true));
        let file = match self
            .tree
            .create(&path, &args)
            .await
            .map_err(|e| self.fail("open", &path, e))?
        {
            Resource::File(f) => f,
            other => {
                self.close_handle(handle(&other)).await;
                return Err(ShareError::Other {
                    operation: format!("read {path}"),
                    detail: "it is a folder, not a file".into(),
                });
            }
        };
        let result = async {
            let size = file
                .query_info::<FileNetworkOpenInformation>()
                .await
                .map_err(|e| self.fail("stat", &path, e))?
                .end_of_file as usize;
            let mut out = vec![0u8; size];
            let mut offset = 0;
            while offset < size {
                let n = self.max_read.min(size - offset);
                let got = file
                    .read_block(&mut out[offset..offset + n], offset as u64, None, false)
                    .await
                    .map_err(|e| self.fail("read", &path, smb::Error::IoError(e)))?;
                if got == 0 {
                    out.truncate(offset);
                    break;
                }
                offset += got;
            }
            Ok(out)
        }
        .await;
        self.close_handle(&file).await;
        result
    }

    async fn open(
        &self,
        path: &str,
        access: FileAccessMask,
        operation: &str,
    ) -> Result<Resource, ShareError> {
        self.tree
            .create(path, &FileCreateArgs::make_open_existing(access))
            .await
            .map_err(|e| self.fail(operation, path, e))
    }

    /// Size, kind and last write time.
    pub async fn stat(&self, path: &str) -> Result<Meta, ShareError> {
        self.alive("stat", path)?;
        let path = norm(path);
        let r = self
            .open(
                &path,
                FileAccessMask::new()
                    .with_file_read_attributes(true)
                    .with_synchronize(true),
                "stat",
            )
            .await?;
        let info = handle(&r)
            .query_info::<FileNetworkOpenInformation>()
            .await
            .map_err(|e| self.fail("stat", &path, e));
        self.close_handle(handle(&r)).await;
        let info = info?;
        Ok(Meta {
            size: info.end_of_file,
            is_dir: info.file_attributes.directory(),
            modified: *info.last_write_time,
        })
    }

    /// Rename (or move within the share); `replace` overwrites an existing target.
    pub async fn rename(&self, from: &str, to: &str, replace: bool) -> Result<(), ShareError> {
        self.alive("rename", to)?;
        let (from, to) = (norm(from), norm(to));
        let access = FileAccessMask::new()
            .with_delete(true)
            .with_file_read_attributes(true)
            .with_synchronize(true);
        let r = self.open(&from, access, "rename").await?;
        let result = handle(&r)
            .set_info(FileRenameInformation {
                replace_if_exists: replace.into(),
                root_directory: 0,
                file_name: to.as_str().into(),
            })
            .await
            .map_err(|e| {
                if replace {
                    self.ctx().classify_replace(&to, e)
                } else {
                    self.fail("rename", &to, e)
                }
            });
        self.close_handle(handle(&r)).await;
        result
    }

    /// [`Share::rename`] with `replace`, answering the size and times of the file now at `to`,
    /// read from the handle that renamed it (no extra open): what a manifest records to notice
    /// later edits by hand.
    pub async fn rename_meta(&self, from: &str, to: &str) -> Result<Meta, ShareError> {
        self.alive("rename", to)?;
        let (from, to) = (norm(from), norm(to));
        let access = FileAccessMask::new()
            .with_delete(true)
            .with_file_read_attributes(true)
            .with_synchronize(true);
        // Open, rename, stat and close as one compounded request: one round trip per file.
        let (opened, renamed, info) = self
            .tree
            .set_query_close::<_, FileNetworkOpenInformation>(
                &from,
                &FileCreateArgs::make_open_existing(access),
                FileRenameInformation {
                    replace_if_exists: true.into(),
                    root_directory: 0,
                    file_name: to.as_str().into(),
                },
            )
            .await
            .map_err(|e| self.fail("rename", &from, e))?;
        opened.map_err(|e| self.fail("rename", &from, e))?;
        // The source is open for DELETE by now: access denied here is the target held open (or
        // not deletable), see `Held::TargetOpen`.
        renamed.map_err(|e| self.ctx().classify_replace(&to, e))?;
        let info = info.map_err(|e| self.fail("stat", &to, e))?;
        Ok(Meta {
            size: info.end_of_file,
            is_dir: info.file_attributes.directory(),
            modified: *info.last_write_time,
        })
    }

    /// [`Share::rename_meta`], retried while a file is held open by another program
    /// ([`ShareError::SharingViolation`]): either a reader holds `from` (or, on Samba, `to`)
    /// without sharing delete access, so opening `from` for DELETE fails with a sharing violation
    /// ([`crate::Held::ShareMode`]); or NTFS refuses to replace `to` while anything has it open,
    /// answering access denied ([`crate::Held::TargetOpen`]). Pauses as `retry` says; any other
    /// error, or the last refusal, is returned. Each retry is logged (WARN), naming the file.
    /// The caller bounds the total wait through `retry` (see [`Retry::total_pause`]).
    pub async fn rename_retrying(
        &self,
        from: &str,
        to: &str,
        retry: &Retry,
    ) -> Result<Meta, ShareError> {
        let mut attempt = 1;
        loop {
            match self.rename_meta(from, to).await {
                Err(e @ ShareError::SharingViolation { .. }) if attempt < retry.attempts => {
                    let pause = retry.pause(attempt);
                    tracing::warn!(
                        path = %norm(to),
                        attempt,
                        of = retry.attempts,
                        pause_ms = pause.as_millis() as u64,
                        error = %e,
                        "a reader holds the file open (sharing violation or access denied on replace); the rename is retried"
                    );
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Take the lock file `path`: created new with delete-on-close, so it exists exactly as long
    /// as this handle is open — the server removes it when the holder closes it or its session
    /// ends (a killed process leaves no stale lock). `None`: another session holds it now.
    pub async fn try_lock(&self, path: &str) -> Result<Option<Lock>, ShareError> {
        self.alive("create the lock file", path)?;
        let path = norm(path);
        let args = FileCreateArgs {
            disposition: CreateDisposition::Create,
            attributes: FileAttributes::new().with_hidden(true),
            options: CreateOptions::new()
                .with_delete_on_close(true)
                .with_non_directory_file(true),
            desired_access: FileAccessMask::new()
                .with_delete(true)
                .with_file_read_attributes(true)
                .with_synchronize(true),
        };
        match self.tree.create(&path, &args).await {
            Ok(r) => Ok(Some(Lock {
                resource: r,
                lost: self.lost.clone(),
            })),
            Err(
                smb::Error::UnexpectedMessageStatus(code)
                | smb::Error::ReceivedErrorMessage(code, _),
            ) if code == Status::U32_OBJECT_NAME_COLLISION
                // The holder just closed it; the server is deleting it.
                || code == crate::error::STATUS_DELETE_PENDING
                || code == crate::error::STATUS_SHARING_VIOLATION =>
            {
                Ok(None)
            }
            Err(e) => Err(self.fail("create the lock file", &path, e)),
        }
    }

    /// Delete a file or an empty folder. Deleting what does not exist is not an error.
    pub async fn remove(&self, path: &str) -> Result<(), ShareError> {
        self.alive("delete", path)?;
        let path = norm(path);
        let access = FileAccessMask::new()
            .with_delete(true)
            .with_file_read_attributes(true);
        let r = match self.open(&path, access, "delete").await {
            Ok(r) => r,
            Err(ShareError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let result = handle(&r)
            .set_info(FileDispositionInformation::default())
            .await
            .map_err(|e| self.fail("delete", &path, e));
        self.close_handle(handle(&r)).await;
        result
    }

    /// The entries of a folder (without `.` and `..`).
    pub async fn list(&self, path: &str) -> Result<Vec<Entry>, ShareError> {
        self.alive("list", path)?;
        let path = norm(path);
        let access: FileAccessMask = DirAccessMask::new()
            .with_list_directory(true)
            .with_read_attributes(true)
            .with_synchronize(true)
            .into();
        let r = self.open(&path, access, "list").await?;
        let Resource::Directory(dir) = r else {
            self.close_handle(handle(&r)).await;
            return Err(ShareError::Other {
                operation: format!("list {path}"),
                detail: "not a folder".into(),
            });
        };
        let dir = Arc::new(dir);
        let mut out = Vec::new();
        let result = async {
            let mut stream = Directory::query::<FileIdBothDirectoryInformation>(&dir, "*")
                .await
                .map_err(|e| self.fail("list", &path, e))?;
            loop {
                let Ok(next) = tokio::time::timeout(self.list_idle, stream.next()).await else {
                    // A listing that went silent on a connection that answers nothing else is a
                    // lost link, as a request's timeout is (see `Context::classify`).
                    if self.heard.silent_for() >= self.list_idle / 2 {
                        self.lost.store(true, Ordering::Relaxed);
                    } else {
                        self.timed_out.store(true, Ordering::Relaxed);
                    }
                    return Err(ShareError::Timeout {
                        operation: format!("the listing of {path}"),
                        timeout: self.list_idle,
                    });
                };
                match next {
                    Some(Ok(entry)) => {
                        let name = entry.file_name.to_string();
                        if name != "." && name != ".." {
                            out.push(Entry {
                                name,
                                is_dir: entry.file_attributes.directory(),
                                size: entry.end_of_file,
                                modified: *entry.last_write_time,
                            });
                        }
                    }
                    Some(Err(e)) => return Err(self.fail("list", &path, e)),
                    None => break,
                }
            }
            Ok(())
        }
        .await;
        self.close_handle(&dir).await;
        result.map(|_| out)
    }

    /// Walk the tree below `root`: `visit(folder, entry)` is called for each entry of each folder
    /// listed (`folder` relative to `root`, empty for `root` itself) and answers whether to list
    /// a subfolder too. One listing per folder visited, never a request per file, and only one
    /// folder's entries held at a time: the cost is set by the folders the caller descends into.
    pub async fn walk<F>(&self, root: &str, mut visit: F) -> Result<(), ShareError>
    where
        F: FnMut(&str, &Entry) -> bool,
    {
        let root = norm(root);
        let mut pending = vec![String::new()];
        while let Some(folder) = pending.pop() {
            let full = join(&root, &folder);
            for entry in self.list(&full).await? {
                if visit(&folder, &entry) && entry.is_dir {
                    pending.push(join(&folder, &entry.name));
                }
            }
        }
        Ok(())
    }

    /// Make `path` (and its parents) a folder only administrators may use, whatever its parent
    /// passes down: a protected DACL (no inheritance) with full control, to the folder, its
    /// subfolders and files, for SYSTEM, BUILTIN\Administrators and the account this session
    /// logged on as ([`acl::private_folder_aces`]).
    ///
    /// A folder already protected, with nothing inherited and those two at full control, is
    /// left as it is (an open and a read of its DACL: an administrator may have added principals
    /// of their own).
    /// Otherwise what is already below it gets the new DACL too, inherited (SMB stores a DACL as
    /// sent, it does not pass it on), children first and the folder last, so that a failure
    /// part-way leaves the folder unprotected and the next call does it all again.
    pub async fn ensure_private_folder(&self, path: &str) -> Result<Privacy, ShareError> {
        let path = norm(path);
        self.create_dir_all(&path).await?;
        let current = self.security(&path).await?;
        if acl::is_private(current.protected, &current.aces) {
            return Ok(Privacy::AlreadyPrivate);
        }
        let account = self.account_sid(&path).await?;
        let aces = acl::private_folder_aces(&account);
        // Each folder's inherited ACEs, computed from its parent's as the server would.
        let mut below = Vec::new();
        self.walk(&path, |folder, entry| {
            below.push((join(folder, &entry.name), entry.is_dir));
            true
        })
        .await?;
        let mut inherited: std::collections::HashMap<String, Vec<Ace>> =
            std::collections::HashMap::from([(String::new(), aces.clone())]);
        let mut reset = 0;
        for (child, is_dir) in &below {
            let parent = child.rsplit_once('\\').map(|(p, _)| p).unwrap_or("");
            let Some(from) = inherited.get(parent) else {
                continue;
            };
            let child_aces = acl::inherited_by(from, *is_dir);
            match self
                .set_dacl_inheritable(&join(&path, child), &child_aces, false)
                .await
            {
                // Removed meanwhile (a temporary file renamed into place): nothing to reset.
                Err(ShareError::NotFound { .. }) => continue,
                other => other?,
            }
            reset += 1;
            if *is_dir {
                inherited.insert(child.clone(), child_aces);
            }
        }
        self.set_dacl_inheritable(&path, &aces, true).await?;
        let after = self.security(&path).await?;
        if !after.protected || !acl::satisfies(&after.aces, &aces) {
            return Err(ShareError::Other {
                operation: format!("protect {path}"),
                detail: "the permissions read back are not the ones written".into(),
            });
        }
        tracing::info!(folder = %path, account = %account, below = reset, "made the folder private to administrators");
        Ok(Privacy::MadePrivate {
            account,
            below: reset,
        })
    }

    /// The SID this session acts as, as the server records it: the owner of a file it creates
    /// (SMB has no "who am I"). For a member of the server's Administrators group, Windows and
    /// Samba make that BUILTIN\Administrators rather than the user.
    async fn account_sid(&self, folder: &str) -> Result<String, ShareError> {
        let probe = join(
            folder,
            &format!(".owner-probe.fargate-smb-tmp-{}", smb::Guid::generate()),
        );
        self.write(&probe, b"").await?;
        let info = self.security(&probe).await;
        if let Err(e) = self.remove(&probe).await {
            tracing::warn!(path = %probe, error = %e, "could not remove a probe file");
        }
        info?.owner.ok_or_else(|| ShareError::Other {
            operation: format!("read the owner of {probe}"),
            detail: "the server returned no owner".into(),
        })
    }

    /// Owner, group and DACL. Only allow and deny ACEs are modelled; others are reported as an error
    /// rather than silently dropped.
    pub async fn security(&self, path: &str) -> Result<SecurityInfo, ShareError> {
        self.alive("read the ACL of", path)?;
        let path = norm(path);
        let r = self
            .open(
                &path,
                FileAccessMask::new()
                    .with_read_control(true)
                    .with_file_read_attributes(true),
                "read the ACL of",
            )
            .await?;
        let info = AdditionalInfo::new()
            .with_owner_security_information(true)
            .with_group_security_information(true)
            .with_dacl_security_information(true);
        let sd = handle(&r)
            .query_security_info(info)
            .await
            .map_err(|e| self.fail("read the ACL of", &path, e));
        self.close_handle(handle(&r)).await;
        let sd = sd?;
        let mut aces = Vec::new();
        for ace in sd
            .dacl
            .as_ref()
            .map(|d| d.ace.as_slice())
            .unwrap_or_default()
        {
            let (kind, a) = match &ace.value {
                AceValue::AccessAllowed(a) => (AceKind::Allow, a),
                AceValue::AccessDenied(a) => (AceKind::Deny, a),
                other => {
                    return Err(ShareError::Other {
                        operation: format!("read the ACL of {path}"),
                        detail: format!(
                            "it holds an ACE of a kind this tool does not handle: {other:?}"
                        ),
                    });
                }
            };
            aces.push(Ace {
                kind,
                flags: u8::from_le_bytes(ace.ace_flags.into_bytes()),
                mask: u32::from_le_bytes(a.access_mask.into_bytes()),
                sid: a.sid.to_string(),
            });
        }
        Ok(SecurityInfo {
            owner: sd.owner_sid.as_ref().map(|s| s.to_string()),
            group: sd.group_sid.as_ref().map(|s| s.to_string()),
            protected: sd.control.dacl_protected(),
            aces,
        })
    }

    /// Replace the DACL of `path` with `aces` (in the order given: pass them through
    /// [`crate::acl::canonical`]); `protected` stops inheritance from the parent.
    pub async fn set_dacl(
        &self,
        path: &str,
        aces: &[Ace],
        protected: bool,
    ) -> Result<(), ShareError> {
        let control = SecurityDescriptorControl::new()
            .with_dacl_protected(protected)
            .with_dacl_auto_inherited(true);
        self.set_dacl_with(path, aces, control).await
    }

    /// [`Share::set_dacl`] asking the server to keep the DACL auto-inherited (SE_DACL_AUTO_INHERIT_REQ
    /// with SE_DACL_AUTO_INHERITED, SDDL `ARAI`): Samba stores AUTO_INHERITED only when asked so,
    /// and without it marks nothing later created below as inherited. Kept apart from
    /// `set_dacl` on purpose: ShareAcl writes back a folder's previous descriptor exactly,
    /// control bits included, and asking for this would change them.
    async fn set_dacl_inheritable(
        &self,
        path: &str,
        aces: &[Ace],
        protected: bool,
    ) -> Result<(), ShareError> {
        let control = SecurityDescriptorControl::new()
            .with_dacl_protected(protected)
            .with_dacl_computed(true)
            .with_dacl_auto_inherited(true);
        self.set_dacl_with(path, aces, control).await
    }

    async fn set_dacl_with(
        &self,
        path: &str,
        aces: &[Ace],
        control: SecurityDescriptorControl,
    ) -> Result<(), ShareError> {
        self.alive("set the ACL of", path)?;
        let path = norm(path);
        let mut wire = Vec::with_capacity(aces.len());
        for a in aces {
            let sid = SID::from_str(&a.sid).map_err(|_| ShareError::Other {
                operation: format!("set the ACL of {path}"),
                detail: format!("{} is not a SID (S-1-5-21-…)", a.sid),
            })?;
            let access = AccessAce {
                access_mask: AccessMask::from_bytes(a.mask.to_le_bytes()),
                sid,
            };
            wire.push(ACE {
                ace_flags: AceFlags::from_bytes([a.flags]),
                value: match a.kind {
                    AceKind::Allow => AceValue::AccessAllowed(access),
                    AceKind::Deny => AceValue::AccessDenied(access),
                },
            });
        }
        let sd = SecurityDescriptor {
            sbz1: 0,
            control: control.with_self_relative(true).with_dacl_present(true),
            owner_sid: None,
            group_sid: None,
            sacl: None,
            dacl: Some(ACL {
                acl_revision: AclRevision::Nt4,
                ace: wire,
            }),
        };
        let access = FileAccessMask::new()
            .with_read_control(true)
            .with_write_dacl(true)
            .with_file_read_attributes(true);
        let r = self.open(&path, access, "set the ACL of").await?;
        let result = handle(&r)
            .set_security_info(
                sd,
                AdditionalInfo::new().with_dacl_security_information(true),
            )
            .await
            .map_err(|e| self.fail("set the ACL of", &path, e));
        self.close_handle(handle(&r)).await;
        result
    }
}

/// What a compounded small file leaves of the write size for the create's and the close's
/// requests, so that the whole frame stays within what the server takes for one write: the
/// write size bounds a WRITE's data, and MS-SMB2 bounds a compound only by what "the transport"
/// takes, which a server may size by it.
const COMPOUND_HEADROOM: usize = 4096;

/// Read until `space` is full or the reader ends; the count read.
async fn fill<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    space: &mut [u8],
) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let mut filled = 0;
    while filled < space.len() {
        let n = reader.read(&mut space[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Write one chunk at `offset`; a server may accept less than asked, so send the rest.
/// A chunk's write failed: what the SMB client said (classified by the caller, so that a lost
/// connection is told apart), or the server's short write.
enum ChunkError {
    Smb(smb::Error),
    ZeroWrite,
}

async fn write_chunk(file: &smb::File, offset: u64, buf: Arc<[u8]>) -> Result<(), ChunkError> {
    let mut done = 0usize;
    let mut rest = buf;
    while !rest.is_empty() {
        let n = file
            .write_block_zc(rest.clone(), offset + done as u64, None)
            .await
            .map_err(|e| ChunkError::Smb(smb::Error::IoError(e)))?;
        if n == 0 {
            return Err(ChunkError::ZeroWrite);
        }
        done += n;
        rest = Arc::from(&rest[n.min(rest.len())..]);
    }
    Ok(())
}

/// Write many files over several sessions to the same share, up to `parallel` files in flight in
/// all; each session takes the next file as soon as one of its writes finishes, so a slow
/// session does not hold the others back. The results come back in input order.
///
/// Why several sessions: a file server may serve each session from a single thread (Samba runs
/// one process per connection), and with small files its per-file work, not the network, is
/// the limit; a second session lets it use a second core.
pub async fn write_many_on(
    shares: &[&Share],
    files: &[(String, Vec<u8>)],
    parallel: usize,
) -> Vec<Result<(), ShareError>> {
    let mut results: Vec<Option<Result<(), ShareError>>> = (0..files.len()).map(|_| None).collect();
    if shares.is_empty() {
        return results
            .into_iter()
            .map(|_| {
                Err(ShareError::Other {
                    operation: "write".into(),
                    detail: "no session to write with".into(),
                })
            })
            .collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots = parallel.max(1);
    // `slots` workers, spread over the sessions round-robin, each pulling the next file.
    let workers = (0..slots).map(|w| {
        let share = &shares[w % shares.len()];
        let next = &next;
        async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((path, data)) = files.get(i) else {
                    break;
                };
                done.push((i, share.write(path, data).await.map(|_| ())));
            }
            done
        }
    });
    for (i, r) in futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
    {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(ShareError::Other {
                    operation: "write".into(),
                    detail: "not attempted".into(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unc_forms() {
        let u = Unc::parse(r"\\fsx.example.test\share\web\img").unwrap();
        assert_eq!(
            (u.server.as_str(), u.share.as_str(), u.path.as_str()),
            ("fsx.example.test", "share", r"web\img")
        );
        assert_eq!(Unc::parse("//10.0.0.5/share").unwrap().path, "");
        assert!(matches!(
            Unc::parse(r"\\server"),
            Err(ShareError::BadUnc(_))
        ));
        assert!(matches!(
            Unc::parse("server/share"),
            Err(ShareError::BadUnc(_))
        ));
    }
}
