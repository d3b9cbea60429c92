//! Terminal interaction: progress bars (only on a terminal), prompts, key input.

use std::io::IsTerminal;
use std::path::Path;

use chatvault_repo::backup::Progress;
use chatvault_repo::restore::RestoreEvent;
use indicatif::{ProgressBar, ProgressStyle};

/// Progress on stderr: a spinner with bytes and the current file, only when stderr is a TTY.
pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    pub fn new(quiet: bool, verb: &str) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Bar { bar: None };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {bytes} ({bytes_per_sec}) {wide_msg}")
                .expect("valid template"),
        );
        bar.set_prefix(verb.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Bar { bar: Some(bar) }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn file(&self, path: &Path) {
        if let Some(b) = &self.bar {
            b.set_message(path.display().to_string());
        }
    }
    fn bytes(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn warn(&self, message: &str) {
        match &self.bar {
            Some(b) => b.println(format!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }
    fn restore_event(&self, event: &RestoreEvent) {
        if let RestoreEvent::MessagesReady { databases, failed } = event {
            let line = if *failed == 0 {
                format!(
                    "messages ready: {databases} database(s) restored and verified; media follows"
                )
            } else {
                format!(
                    "messages restored with errors: {databases} database(s) in place, {failed} \
                     file(s) of their folders failed (listed at the end); media follows"
                )
            };
            match &self.bar {
                Some(b) => b.suspend(|| println!("{line}")),
                None => println!("{line}"),
            }
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
    }
}

/// The SDK's progress callback ([`chatvault_client::device::ProgressListener`]) on the same bar
/// (the demo runs its stories through [`chatvault_client::device::Device`]).
impl chatvault_client::device::ProgressListener for Bar {
    fn on_progress(&self, done_bytes: u64, _total_bytes: u64, current_path: String) {
        if let Some(b) = &self.bar {
            b.set_position(done_bytes);
            b.set_message(current_path);
        }
    }
}

/// Restore progress as newline-delimited JSON on stdout (`restore --json`); warnings on stderr.
pub struct JsonEvents;

impl Progress for JsonEvents {
    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
    fn restore_event(&self, event: &RestoreEvent) {
        json_line(event);
    }
}

/// Prints one JSON value on one line of stdout and flushes it (a reader may be waiting for it).
pub fn json_line(v: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    if let Ok(text) = serde_json::to_string(v) {
        let _ = std::io::Write::write_all(&mut out, text.as_bytes());
        let _ = std::io::Write::write_all(&mut out, b"\n");
        let _ = std::io::Write::flush(&mut out);
    }
}

/// Asks for a secret on the terminal without echo. `None` when not interactive.
pub fn prompt_secret(prompt: &str) -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let s = rpassword::prompt_password(prompt)?;
    Ok(Some(zeroize::Zeroizing::new(s)))
}

/// Asks a yes/no style confirmation; returns the typed line. `None` when not interactive.
pub fn prompt_line(prompt: &str) -> anyhow::Result<Option<String>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    eprint!("{prompt}");
    let mut s = String::new();
    std::io::stdin().read_line(&mut s)?;
    Ok(Some(s.trim().to_string()))
}
