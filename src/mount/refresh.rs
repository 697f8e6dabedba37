//! The mount's refresh task (docs/design.md, "Refresh"): one task that revalidates the
//! catalogue every `--refresh-interval`, on SIGHUP, and when `.trackfs/refresh` is read (what
//! `trackfs refresh MOUNTPOINT` does), swaps the new tree in, tells the kernel, and saves the
//! snapshot. One task, so refreshes never overlap; requests that arrive while one runs are
//! answered together by the next one, which starts after they asked.

use super::disk::Disk;
use crate::catalogue::library::{self, Extras};
use crate::catalogue::refresh::{self, Catalogue, Outcome};
use crate::client::seams::ControlPlane;
use crate::client::stats::{unix_now, Stats};
use crate::fs::fuse::Notifier;
use crate::fs::tree::Tree;
use crate::fs::FsCore;
use crate::protocol::model::{AudioFormat, PlaylistId};
use crate::readpath::images::ImageStore;
use crate::units::count;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The answer to one asker: a line saying what changed, or why the origin was not reached.
type Answer = oneshot::Sender<Result<String, String>>;

/// Everything a refresh touches.
pub(crate) struct Refresher {
    pub api: Arc<dyn ControlPlane>,
    pub core: Arc<FsCore>,
    pub formats: Vec<AudioFormat>,
    pub disk: Option<Arc<Disk>>,
    pub stats: Arc<Stats>,
    pub catalogue: Catalogue,
    /// Covers and playlists are loaded again when the library changed (the `/library` ETag
    /// stands for its playlists too), or when the mount started without them (`extras_due`).
    pub images: Arc<ImageStore>,
    pub extras: Extras,
    pub extras_due: bool,
    /// The ETags of `extras.playlists`' answers.
    pub playlist_etags: HashMap<PlaylistId, String>,
}

/// Asks the refresh task for a refresh and waits for its answer.
#[derive(Clone)]
pub(crate) struct Asker(mpsc::UnboundedSender<Answer>);

impl Asker {
    pub async fn refresh(&self) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(tx)
            .map_err(|_| "the mount is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the mount is shutting down".to_string())?
    }
}

/// Starts the task. `now`: refresh at once (the mount started from its snapshot).
pub(crate) fn spawn(
    refresher: Refresher,
    notifier: Notifier,
    interval: Option<Duration>,
    now: bool,
    shutdown: CancellationToken,
) -> Asker {
    // Above the last number a mount with this disk cache gave (the clock may have gone back).
    let saved = refresher.disk.as_ref().map_or(0, |d| d.last_change());
    let first = first_change_number(saved);
    refresher.core.number_changes_from(first);
    if let Some(disk) = &refresher.disk {
        disk.changes_numbered_to(first - 1);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let asker = Asker(tx);
    let for_reads = asker.clone();
    refresher.core.set_refresh(Box::new(move || {
        let asker = for_reads.clone();
        Box::pin(async move { asker.refresh().await })
    }));
    tokio::spawn(run(
        refresher,
        Arc::new(notifier),
        rx,
        interval,
        now,
        shutdown,
    ));
    asker
}

/// The number of this mount's first change-feed line: the Unix time in microseconds, so the
/// numbers keep growing across remounts (a scanner's hook that remembers the last one it
/// handled reads on after a remount), also without a disk cache; a mount would need a
/// million changes a second of its life to reach the next mount's first number. With a disk
/// cache, above the `saved` last number too: a clock that went back between mounts (a
/// Raspberry Pi without a real-time clock, before NTP) must not make them go down. Exact in
/// a double (under 2^53) for centuries.
fn first_change_number(saved: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    now.max(saved.saturating_add(1)).max(1)
}

async fn run(
    mut refresher: Refresher,
    notifier: Arc<Notifier>,
    mut asked: mpsc::UnboundedReceiver<Answer>,
    interval: Option<Duration>,
    now: bool,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())
        .inspect_err(|e| tracing::warn!("SIGHUP will not refresh the library: {e}"))
        .ok();
    let mut next = interval.map(|i| tokio::time::Instant::now() + i);
    let mut first = now;
    loop {
        let mut answers = Vec::new();
        if !first {
            let timer = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let sighup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = timer => {}
                _ = sighup => tracing::info!("SIGHUP: refreshing the library"),
                asker = asked.recv() => match asker {
                    Some(answer) => answers.push(answer),
                    None => return,
                },
            }
        }
        first = false;
        // Everyone who asked by now is answered by this refresh, which starts after they did.
        while let Ok(answer) = asked.try_recv() {
            answers.push(answer);
        }
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = refresher.once(&notifier) => result,
        };
        for answer in answers {
            let _ = answer.send(result.clone());
        }
        next = interval.map(|i| tokio::time::Instant::now() + i);
    }
}

impl Refresher {
    /// One refresh: revalidate, and when the catalogue changed, swap, notify and save.
    async fn once(&mut self, notifier: &Arc<Notifier>) -> Result<String, String> {
        // Offline (the disk cache knows): one connection tried, not the whole retry bound.
        if let Some(disk) = &self.disk {
            if disk.reach.is_offline() && !disk.reach.probe().await {
                self.stats.refresh_failures.incr();
                return Err("cannot refresh from the origin: no connection".into());
            }
        }
        // Through the disk tier's gate when there is one: a request that cannot connect
        // takes the mount offline, so reads fail at once too, and the next refresh probes.
        let api = match &self.disk {
            Some(disk) => disk.gate(self.api.clone()),
            None => self.api.clone(),
        };
        let outcome = refresh::revalidate(api.as_ref(), &self.catalogue).await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                self.stats.refresh_failures.incr();
                tracing::warn!("refreshing the library failed: {e}; the mount shows it as it was");
                return Err(format!("cannot refresh from the origin: {e}"));
            }
        };
        self.stats.refreshes.incr();
        let (catalogue, complete, failed) = match outcome {
            Outcome::Unchanged if !self.extras_due => {
                self.stats.catalogue_confirmed.set(unix_now());
                return Ok("unchanged".into());
            }
            Outcome::Unchanged => (self.catalogue.clone(), true, None),
            Outcome::Revalidated {
                catalogue,
                complete,
                failed,
            } => (catalogue, complete, failed),
        };
        if failed.is_some() {
            self.stats.refresh_failures.incr();
        }
        if complete {
            self.stats.catalogue_confirmed.set(unix_now());
        }
        let before: HashSet<_> = self.catalogue.albums.iter().map(|a| a.album.id).collect();
        let after: HashSet<_> = catalogue.albums.iter().map(|a| a.album.id).collect();
        let (added, removed) = (
            after.difference(&before).count(),
            before.difference(&after).count(),
        );
        self.stats.albums_added.add(added as u64);
        self.stats.albums_removed.add(removed as u64);

        let changed_albums = catalogue.albums != self.catalogue.albums;
        let mut summary = format!("{} added, {removed} removed", count(added, "album"));
        // Playlists each revalidated with their ETags; pictures already known not fetched.
        // Not from an origin that just failed: they wait for the next refresh.
        let extras = match failed {
            Some(_) => {
                self.extras_due = true;
                self.extras.clone()
            }
            None => {
                let control = self.images.control();
                let ((playlists, playlist_etags), covers) = tokio::join!(
                    refresh::revalidate_playlists(
                        control.as_ref(),
                        &self.extras.playlists,
                        &self.playlist_etags
                    ),
                    library::load_covers(&catalogue.albums, &self.extras.covers, &self.images),
                );
                self.playlist_etags = playlist_etags;
                self.extras_due = false;
                Extras { playlists, covers }
            }
        };
        let extras_changed = extras != self.extras;
        if changed_albums || extras_changed {
            self.extras = extras.clone();
            let (albums, formats, core) = (
                catalogue.albums.clone(),
                self.formats.clone(),
                self.core.clone(),
            );
            let notifier = notifier.clone();
            let lines = tokio::task::spawn_blocking(move || {
                let diff = core.swap(Tree::build_with(&albums, &extras, &formats));
                notifier.forget(&diff.forget);
                diff.changes.len()
            })
            .await
            .map_err(|e| format!("the refresh failed: {e}"))?;
            // The swap numbered one line per change, on from the last number.
            if let Some(disk) = &self.disk {
                disk.changes_numbered_to(disk.last_change() + lines as u64);
            }
            summary = format!("{summary}; {lines} changes");
            tracing::info!("library refreshed: {summary}");
        }
        if !complete && failed.is_none() {
            summary.push_str(" (some of the library could not be fetched; kept as it was)");
        }
        if changed_albums || extras_changed || catalogue.etags != self.catalogue.etags {
            if let Some(disk) = &self.disk {
                let (disk, saved) = (disk.clone(), catalogue.clone());
                let (extras, etags) = (self.extras.clone(), self.playlist_etags.clone());
                let _ =
                    tokio::task::spawn_blocking(move || disk.refreshed(saved, extras, etags)).await;
            }
        }
        self.catalogue = catalogue;
        match failed {
            // What was fetched before the origin failed is shown; the asker hears that the
            // refresh did not get through (`trackfs refresh` exits non-zero).
            Some(failed) if changed_albums || extras_changed => Err(format!(
                "cannot refresh from the origin: {failed} (before that: {summary})"
            )),
            Some(failed) => Err(format!("cannot refresh from the origin: {failed}")),
            None => Ok(summary),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_change_number;

    #[test]
    fn change_numbers_go_on_above_the_saved_one_when_the_clock_went_back() {
        let now = first_change_number(0);
        // As if the last mount had run with a clock a day ahead of this one.
        let ahead = now + 86_400_000_000;
        assert_eq!(first_change_number(ahead), ahead + 1);
        assert!(first_change_number(1) >= now, "the clock, when it is ahead");
        assert_eq!(first_change_number(u64::MAX), u64::MAX);
    }
}
