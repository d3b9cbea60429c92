//! What to generate: [`SampleSpec`] and its presets.

use crate::Error;

/// How big a sample chat folder is and how much one simulated day changes it.
///
/// Start from a preset and change fields with struct update syntax:
/// `SampleSpec { seed: 7, ..SampleSpec::small() }`. The same spec (all fields, including
/// `seed`) always produces byte-identical files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSpec {
    /// Seed of every random choice (text, timestamps, media bytes).
    pub seed: u64,
    /// Address-book contacts (rows in `wa.db` and `jid`).
    pub contacts: u32,
    /// Chats in total, group chats included; the individual chats each belong to one contact.
    pub chats: u32,
    /// How many of `chats` are group chats.
    pub group_chats: u32,
    /// Messages in the initial history, media messages included.
    pub messages: u64,
    /// Days the initial history spans, starting 2024-01-01 (UTC).
    pub history_days: u32,
    /// Media files (and media messages) in the initial history.
    pub media_files: u32,
    /// Total bytes of the initial media files; individual sizes are scaled towards it while
    /// staying inside each kind's realistic range (see [`crate::MediaKind::size_range`]).
    pub media_bytes_target: u64,
    /// Messages appended by each [`crate::next_day`].
    pub day_messages: u32,
    /// Media files (and media messages) among them.
    pub day_media_files: u32,
    /// Total bytes of one day's media files.
    pub day_media_bytes_target: u64,
    /// Chats that see new messages on a simulated day.
    pub day_active_chats: u32,
    /// Reactions a day adds to messages of the last week.
    pub day_reactions: u32,
    /// Old messages anywhere in the history that a day stars.
    pub day_stars: u32,
    /// Messages of the same day whose text a day edits.
    pub day_edits: u32,
    /// Old text messages a day deletes.
    pub day_deletes: u32,
}

impl SampleSpec {
    /// A few MB in total (≈ 4 MB database, 8 MB media): for tests and the one-minute demo.
    pub fn small() -> Self {
        Self {
            seed: 0x5EED,
            contacts: 60,
            chats: 24,
            group_chats: 6,
            messages: 14_000,
            history_days: 120,
            media_files: 40,
            media_bytes_target: 8_000_000,
            day_messages: 150,
            day_media_files: 4,
            day_media_bytes_target: 800_000,
            day_active_chats: 8,
            day_reactions: 10,
            day_stars: 4,
            day_edits: 2,
            day_deletes: 2,
        }
    }

    /// The synthetic chat folder of the research notes' peer baselines (restic, borg):
    /// ≈ 100 MB SQLite store (350 000 messages), ≈ 300 MB media in 681 files (683 with the two
    /// databases), and a day that changes ≈ 1 000 scattered pages and adds 27 MB of media.
    pub fn benchmark() -> Self {
        Self {
            seed: 0x5EED,
            contacts: 400,
            chats: 150,
            group_chats: 30,
            messages: 350_000,
            history_days: 365,
            media_files: 683 - 2,
            media_bytes_target: 300_000_000,
            // About half an average history day (350 000 / 365 ≈ 960). Each message lands on a
            // random page of `message_key_index` (random key ids, as on Android), which
            // dominates the changed pages: 500 gives ≈ 950–1 150 changed pages, the research
            // notes' ≈ 900; 1 % of the history (3 500) would change ≈ 3 000.
            day_messages: 500,
            day_media_files: 40,
            day_media_bytes_target: 27_000_000,
            day_active_chats: 30,
            day_reactions: 60,
            day_stars: 30,
            day_edits: 10,
            day_deletes: 20,
        }
    }

    /// The same spec with another seed.
    pub fn with_seed(self, seed: u64) -> Self {
        Self { seed, ..self }
    }

    /// Checks that the numbers fit together.
    pub fn validate(&self) -> Result<(), Error> {
        if self.contacts == 0 || self.chats == 0 {
            return Err(Error::InvalidSpec("contacts and chats must be at least 1"));
        }
        if self.group_chats > self.chats {
            return Err(Error::InvalidSpec("group_chats exceeds chats"));
        }
        if self.chats - self.group_chats > self.contacts {
            return Err(Error::InvalidSpec(
                "more individual chats than contacts (each belongs to one contact)",
            ));
        }
        if self.group_chats > 0 && self.contacts < 2 {
            return Err(Error::InvalidSpec("group chats need at least 2 contacts"));
        }
        if self.history_days == 0 {
            return Err(Error::InvalidSpec("history_days must be at least 1"));
        }
        if u64::from(self.media_files) > self.messages {
            return Err(Error::InvalidSpec("media_files exceeds messages"));
        }
        if self.day_media_files > self.day_messages {
            return Err(Error::InvalidSpec("day_media_files exceeds day_messages"));
        }
        if self.day_edits > self.day_messages {
            return Err(Error::InvalidSpec("day_edits exceeds day_messages"));
        }
        if self.media_files >= 1 << 24 || self.day_media_files >= 1 << 24 {
            return Err(Error::InvalidSpec("too many media files"));
        }
        Ok(())
    }

    /// A short fingerprint stored in the database so `next_day` can refuse a different spec.
    pub(crate) fn fingerprint(&self) -> String {
        // FNV-1a over the Debug form: stable for a given build, which is all that's needed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in format!("{self:?}").bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        SampleSpec::small().validate().unwrap();
        SampleSpec::benchmark().validate().unwrap();
    }

    #[test]
    fn too_many_media_files_rejected() {
        let spec = SampleSpec {
            messages: 3,
            ..SampleSpec::small()
        };
        assert!(matches!(spec.validate(), Err(Error::InvalidSpec(_))));
    }

    #[test]
    fn fingerprint_depends_on_seed() {
        let a = SampleSpec::small();
        let b = a.clone().with_seed(2);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), SampleSpec::small().fingerprint());
    }
}
