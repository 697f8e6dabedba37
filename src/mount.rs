//! `trackfs mount`: check the mountpoint and the origin, load the catalogue, mount, and serve
//! until unmounted or told to stop (SIGINT/SIGTERM unmount cleanly and exit 0).

use crate::catalogue::library::Extras;
use crate::client::api::{Api, Credentials};
use crate::client::cdn::{Cdn, CdnConfig};
use crate::client::http1::Http1Transport;
use crate::client::seams::{ControlPlane, RangeSource};
use crate::client::stats::Stats;
use crate::client::transport::ReqwestTransport;
use crate::client::Timeouts;
use crate::fs::fuse;
use crate::fs::tree::{pick_file, AlbumEntry, Tree};
use crate::fs::FsCore;
use crate::protocol::keyfile::Keys;
use crate::protocol::model::{AudioFormat, FileId, Track};
use crate::readpath::block_cache::BlockCache;
use crate::readpath::budget::MemoryBudget;
use crate::readpath::buffers::Buffers;
use crate::readpath::heads::HeadStore;
use crate::readpath::images::ImageStore;
use crate::readpath::kernel_window::KernelWindow;
use crate::readpath::keys::KeyStore;
use crate::readpath::reader::{Reader, ReaderConfig};
use crate::{catalogue, client};
pub(crate) use mountpoint::unescape_mountinfo;
use mountpoint::{check_mountpoint, detach, unmount_now};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub mod control;
mod disk;
mod mountpoint;
mod pins;
mod refresh;

/// Everything a mount needs, as plain data (built from flags by `cli`, or by `demo`).
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub origin: String,
    pub mountpoint: PathBuf,
    pub credentials: Credentials,
    pub cache_size: u64,
    pub keys: Keys,
    /// Preferred formats in order; empty = best quality available.
    pub formats: Vec<AudioFormat>,
    pub allow_other: bool,
    pub ca_cert: Option<Vec<u8>>,
    pub cdn: CdnConfig,
    pub timeouts: Timeouts,
    pub reader: ReaderConfig,
    /// The kernel's read-ahead for this mount, in KiB (raised as root; 0 leaves it alone),
    /// narrowed to 128 KiB for new opens while a scanner is at work.
    pub kernel_read_ahead_kb: u32,
    /// Root of the disk cache (the origin gets a folder in it); `None` = no disk cache.
    pub disk_cache: Option<PathBuf>,
    pub disk_cache_size: u64,
    /// How often the catalogue is revalidated (`None`: only on SIGHUP and `trackfs refresh`).
    pub refresh_interval: Option<Duration>,
}

impl MountConfig {
    /// Defaults for everything but where to connect and mount.
    pub fn new(origin: &str, mountpoint: &Path, credentials: Credentials) -> Self {
        MountConfig {
            origin: origin.to_string(),
            mountpoint: mountpoint.to_path_buf(),
            credentials,
            cache_size: DEFAULT_CACHE_SIZE,
            keys: Keys::new(),
            formats: Vec::new(),
            allow_other: false,
            ca_cert: None,
            cdn: CdnConfig::default(),
            timeouts: Timeouts::default(),
            reader: ReaderConfig::default(),
            kernel_read_ahead_kb: DEFAULT_KERNEL_READ_AHEAD_KB,
            // Off unless asked for: `trackfs mount` asks for the XDG default.
            disk_cache: None,
            disk_cache_size: DEFAULT_DISK_CACHE_SIZE,
            refresh_interval: Some(DEFAULT_REFRESH_INTERVAL),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mountpoint {0} does not exist; create it with `mkdir -p {0}`")]
    MissingMountpoint(String),
    #[error("mountpoint {0} is not a directory")]
    NotADirectory(String),
    #[error("{0} is already a mountpoint; unmount it first with `fusermount3 -u {0}`")]
    AlreadyMounted(String),
    #[error(
        "{0} is still mounted, but the trackfs process behind it is gone (killed?); \
         clean it up with `fusermount3 -u {0}` (or `umount {0}` as root) and mount again"
    )]
    Orphaned(String),
    #[error(
        "mountpoint {0} is not empty (the mount would hide its files); use an empty directory"
    )]
    NotEmpty(String),
    #[error("cannot use the origin: {0}")]
    Origin(#[from] crate::client::error::FetchError),
    #[error("cannot mount at {path}: {reason}")]
    Mount { path: String, reason: String },
    #[error("{0}")]
    Setup(String),
    #[error("interrupted before the mount was up; nothing was mounted")]
    Interrupted,
}

/// 64–256 MiB suits a desktop (README, "Cache sizing").
pub const DEFAULT_CACHE_SIZE: u64 = 256 << 20;

/// What `--refresh-interval` defaults to.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// What `--disk-cache-size` defaults to.
pub const DEFAULT_DISK_CACHE_SIZE: u64 = 4 << 30;

/// Larger kernel read-ahead means fewer, larger FUSE reads for sequential readers (1 MiB
/// READs); while a scanner is at work, opens get 128 KiB instead (`readpath::kernel_window`).
pub const DEFAULT_KERNEL_READ_AHEAD_KB: u32 = 1024;

/// A mounted filesystem; dropping it unmounts.
pub(crate) struct Mounted {
    session: Option<fuse::Session>,
    shutdown: CancellationToken,
    /// Cancelled when the FUSE session ends (an unmount from outside, too).
    ended: CancellationToken,
    /// Mounted through fusermount3's auto-unmount watcher (`--allow-other`).
    auto_unmount: bool,
    pub tracks: usize,
    pub mountpoint: PathBuf,
    /// Closed once the session is over, so the next mount can take its lock.
    disk: Option<Arc<disk::Disk>>,
    control: Option<control::Socket>,
}

impl Mounted {
    /// Unmounts and waits for the session to end.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.unmount_inner()
    }

    /// Fails whatever still waits on the network with EIO, then unmounts. When a program keeps
    /// a file open (EBUSY), the mount is detached lazily: it vanishes from the tree now and
    /// the kernel lets go when the last file is closed.
    fn unmount_inner(&mut self) -> Result<(), MountError> {
        let result = self.end_session();
        self.control.take();
        if let Some(disk) = self.disk.take() {
            disk.close();
        }
        result
    }

    fn end_session(&mut self) -> Result<(), MountError> {
        self.shutdown.cancel();
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if session.is_finished() {
            // Unmounted from outside (`fusermount3 -u`): nothing left to unmount.
            if let Err(e) = session.join() {
                tracing::debug!("FUSE session ended: {e}");
            }
            return Ok(());
        }
        // fuser unmounts an auto-unmount mount by closing the watcher's socket, but
        // fusermount3 (3.14) then leaves a filesystem that still answers alone, and the
        // join below would wait forever: so unmount it ourselves first.
        let unmounted = match self.auto_unmount {
            true => unmount_now(&self.mountpoint),
            false => Ok(()),
        };
        let result = unmounted.and_then(|()| session.unmount_and_join().map_err(|e| e.to_string()));
        if let Err(e) = result {
            tracing::info!("unmount: {e}; detaching lazily");
            detach(&self.mountpoint).map_err(|reason| MountError::Mount {
                path: self.mountpoint.display().to_string(),
                reason,
            })?;
        }
        Ok(())
    }

    /// True once the kernel side is gone (e.g. `fusermount3 -u` from outside).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(fuse::Session::is_finished)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.unmount_inner();
    }
}

/// Connects, loads the catalogue and mounts; the filesystem runs on `runtime` and a
/// background fuser session. Mounting itself blocks (mount(2), or fusermount3 when not root)
/// on purpose: a mount must not come up after a Ctrl-C was answered with "nothing mounted".
pub(crate) async fn mount(config: MountConfig) -> Result<Mounted, MountError> {
    check_mountpoint(&config.mountpoint)?;
    let stats = Arc::new(Stats::default());
    let http = client::http_client(config.ca_cert.as_deref(), config.timeouts.connect)
        .map_err(MountError::Setup)?;
    // The control plane gets the same retry bound as the CDN.
    let api = Arc::new(
        Api::new(
            http.clone(),
            &config.origin,
            config.credentials.clone(),
            stats.clone(),
        )
        .with_attempts(config.cdn.attempts)
        .with_request_timeout(config.timeouts.control_request),
    );
    // A token first: bad credentials or a dead origin fail here, once, with a clear message
    // (unless the disk cache has a catalogue to start from).
    let online = async {
        api.token().await?;
        catalogue::refresh::load(api.as_ref()).await
    };
    // From the snapshot when there is one (revalidated at once, in the background).
    let disk = disk::open(&config, stats.clone())?.map(Arc::new);
    let start = match &disk {
        Some(disk) => disk.catalogue(online).await?,
        None => disk::Start {
            catalogue: online.await?,
            sizes: Default::default(),
            from_snapshot: None,
            extras: Extras::default(),
            playlist_etags: HashMap::new(),
        },
    };
    let confirmed = start
        .from_snapshot
        .unwrap_or_else(std::time::SystemTime::now);
    stats.catalogue_confirmed.set(
        confirmed
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let albums = &start.catalogue.albums;
    // Covers and playlists (v1.1): an origin without them, or one that cannot be reached
    // (the gate of the disk cache fails at once then), mounts with neither. A mount from its
    // snapshot shows the snapshot's at once (offline too); its first refresh revalidates them.
    let images = Arc::new(
        ImageStore::new(
            match &disk {
                Some(disk) => disk.gate(api.clone()),
                None => api.clone(),
            },
            stats.clone(),
            MemoryBudget::split(config.cache_size).images,
        )
        .with_disk(disk.as_ref().map(|d| d.store.clone())),
    );
    let (extras, playlist_etags) = match start.from_snapshot {
        Some(_) => (start.extras, start.playlist_etags),
        None => {
            let control = images.control();
            let (extras, etags) =
                catalogue::library::load(control.as_ref(), albums, &HashMap::new(), &images).await;
            if let Some(disk) = disk.clone() {
                let (whole, saved) = (extras.clone(), etags.clone());
                tokio::task::spawn_blocking(move || disk.loaded(whole, saved))
                    .await
                    .map_err(|e| MountError::Setup(e.to_string()))?;
            }
            (extras, etags)
        }
    };
    let tree = Tree::build_with(albums, &extras, &config.formats);
    let tracks = tree.track_count();
    check_formats(albums, &config.formats, tracks)?;

    let parts = Parts {
        http,
        api: api.clone(),
        stats: stats.clone(),
    };
    let core = build_core(&config, tree, parts, disk.as_deref(), &start.sizes);
    let core = Arc::new(core.with_images(images.clone()));
    let shutdown = CancellationToken::new();
    let fs = fuse::TrackFs::new(
        core.clone(),
        tokio::runtime::Handle::current(),
        shutdown.clone(),
    );
    let ended = fs.ended();
    let session =
        fuse::spawn(fs, &config.mountpoint, config.allow_other).map_err(|e| MountError::Mount {
            path: config.mountpoint.display().to_string(),
            reason: e.to_string(),
        })?;
    // The kernel offers 128 KiB at mount time; raised now, and narrowed per open for scanners.
    core.attach_kernel_window(&config.mountpoint);
    let control = disk.as_ref().and_then(|disk| {
        let listening = control::serve(
            &config.mountpoint,
            disk.clone(),
            core.clone(),
            shutdown.clone(),
        );
        listening
            .inspect_err(|e| tracing::warn!("no control socket (trackfs pin cannot reach it): {e}"))
            .ok()
    });
    let refresher = refresh::Refresher {
        api,
        core,
        formats: config.formats.clone(),
        disk: disk.clone(),
        stats,
        catalogue: start.catalogue,
        images,
        extras,
        extras_due: start.from_snapshot.is_some(),
        playlist_etags,
    };
    let notifier = session.notifier();
    let now = start.from_snapshot.is_some();
    refresh::spawn(
        refresher,
        notifier,
        config.refresh_interval,
        now,
        shutdown.clone(),
    );
    Ok(Mounted {
        session: Some(session),
        shutdown,
        ended,
        auto_unmount: config.allow_other,
        tracks,
        mountpoint: config.mountpoint,
        disk,
        control,
    })
}

/// What a mount made before the read path: the HTTP client, the control plane, the counters.
struct Parts {
    http: reqwest::Client,
    api: Arc<Api>,
    stats: Arc<Stats>,
}

/// The read path: block cache, CDN client, keys and heads behind one filesystem core.
fn build_core(
    config: &MountConfig,
    tree: Tree,
    Parts { http, api, stats }: Parts,
    disk: Option<&disk::Disk>,
    sizes: &HashMap<FileId, u64>,
) -> FsCore {
    let budget = MemoryBudget::split(config.cache_size);
    let cache = Arc::new(BlockCache::new(budget.blocks, stats.clone()));
    crate::readpath::buffers::give_freed_buffers_back();
    let buffers = Buffers::new(budget.spare_buffers);
    let transport = Arc::new(Http1Transport::new(
        ReqwestTransport::new(http),
        config.timeouts.connect,
    ));
    let cdn = Cdn::new(transport, api.clone(), config.cdn.clone(), stats.clone());
    let cdn = Arc::new(cdn.with_buffers(buffers.clone()));
    // With a disk cache: ciphertext and keys kept across mounts, and offline known at once.
    let (control, source): (Arc<dyn ControlPlane>, Arc<dyn RangeSource>) = match disk {
        Some(disk) => (disk.gate(api), disk.wrap(cdn, buffers.clone())),
        None => (api, cdn),
    };
    let keys = KeyStore::new(config.keys.clone(), control.clone());
    let keys = keys.with_disk(disk.and_then(|d| d.keys.clone()), stats.clone());
    let keys = Arc::new(keys.with_reachability(disk.map(|d| d.reach.clone())));
    let reader_keys = keys.clone();
    let heads = HeadStore::new(control, budget.heads);
    let reader_config = budget.fit(&config.reader);
    let reader = Reader::new(
        cache.clone(),
        source,
        keys,
        heads,
        stats.clone(),
        reader_config,
    );
    let window = KernelWindow::new(config.kernel_read_ahead_kb);
    let reader = reader.with_kernel_window(Arc::new(window));
    let reader = Arc::new(reader.with_buffers(buffers));
    if let Some(disk) = disk {
        disk.attach(reader.clone(), reader_keys, sizes);
    }
    FsCore::new(tree, reader, cache, stats)
}

/// `--format` hides tracks without a file in the formats asked for: say how many, and which
/// formats they do have; when that hides every track, the mount is of no use and fails.
fn check_formats(
    albums: &[AlbumEntry],
    formats: &[AudioFormat],
    shown: usize,
) -> Result<(), MountError> {
    if formats.is_empty() {
        return Ok(());
    }
    let hidden: Vec<&Track> = albums
        .iter()
        .flat_map(|a| &a.tracks)
        .filter(|t| pick_file(t, formats).is_none())
        .collect();
    if hidden.is_empty() {
        return Ok(());
    }
    let names = |formats: &mut dyn Iterator<Item = AudioFormat>| {
        let set: std::collections::BTreeSet<_> = formats.map(AudioFormat::name).collect();
        set.into_iter().collect::<Vec<_>>().join(",")
    };
    let asked = names(&mut formats.iter().copied());
    let present = names(&mut hidden.iter().flat_map(|t| t.files.iter().map(|f| f.format)));
    if shown == 0 {
        return Err(MountError::Setup(format!(
            "no track has a file in the formats asked for (--format {asked}); \
             the library's tracks come in {present}"
        )));
    }
    tracing::warn!(
        "{} hidden: no file in the formats asked for (--format {asked}); they come in {present}",
        crate::units::count(hidden.len(), "track")
    );
    Ok(())
}

/// Mounts, then serves until SIGINT/SIGTERM or an outside unmount.
pub async fn run(config: MountConfig) -> Result<(), MountError> {
    // Listen before mounting: a SIGTERM right after the mount appears must unmount, not kill.
    let mut stop = StopSignals::listen();
    let mountpoint = config.mountpoint.display().to_string();
    let mounted = tokio::select! {
        mounted = mount(config) => mounted?,
        () = stop.received() => return Err(MountError::Interrupted),
    };
    let tracks = crate::units::count(mounted.tracks, "track");
    eprintln!("trackfs: mounted {tracks} at {mountpoint} (Ctrl-C or `fusermount3 -u {mountpoint}` to unmount)");
    stop.wait(&mounted).await;
    mounted.unmount()?;
    eprintln!("trackfs: unmounted {mountpoint}");
    Ok(())
}

/// SIGINT and SIGTERM, caught from the moment this is created.
pub(crate) struct StopSignals {
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    pub fn listen() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        let signals = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => {
                tracing::error!("cannot listen for signals; unmount with fusermount3 -u");
                None
            }
        };
        StopSignals { signals }
    }

    /// Returns on SIGINT or SIGTERM (never, when they could not be caught).
    pub async fn received(&mut self) {
        match self.signals.as_mut() {
            Some((term, int)) => tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            },
            None => std::future::pending().await,
        }
    }

    /// Returns on SIGINT, SIGTERM, or when the mount goes away from outside.
    /// The session's end is signalled (fuser's `destroy`); the poll is a fallback, and after
    /// the signal a short wait lets the session thread finish, so unmounting finds it done.
    pub async fn wait(&mut self, mounted: &Mounted) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        while !mounted.is_finished() {
            tokio::select! {
                () = self.received() => return,
                () = mounted.ended.cancelled() => break,
                _ = tick.tick() => {}
            }
        }
        for _ in 0..100 {
            if mounted.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_format_flags_no_track_counts_as_hidden() {
        let album = crate::protocol::model::Album {
            id: crate::protocol::model::AlbumId([1; 16]),
            name: "A".into(),
            artists: vec![],
            date: None,
            covers: vec![],
            discs: vec![],
        };
        let track = Track {
            id: crate::protocol::model::TrackId([2; 16]),
            name: "T".into(),
            artists: vec![],
            number: 1,
            disc_number: 1,
            duration_ms: 0,
            files: vec![],
        };
        let albums = [AlbumEntry {
            album,
            tracks: vec![track],
        }];
        assert!(check_formats(&albums, &[], 0).is_ok());
        assert!(check_formats(&albums, &[AudioFormat::Mp3_320], 0).is_err());
    }
}
