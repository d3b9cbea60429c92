//! `chatvault whatsapp decrypt|encrypt`: WhatsApp crypt15 backups with the 64-digit key.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chatvault_format::key::BackupKey;

use super::ctx::Ctx;
use super::shared::{key_from_env_or_file, write_private};
use crate::args::WhatsappCommand;
use crate::exit::{self, WrongKey};
use crate::ui;

pub(super) fn run(ctx: &Ctx, c: &WhatsappCommand) -> Result<u8> {
    let (a, decrypt) = match c {
        WhatsappCommand::Decrypt(a) => (a, true),
        WhatsappCommand::Encrypt(a) => (a, false),
    };
    let key = match key_from_env_or_file(a.key.as_deref().or(ctx.key_file.as_deref()))? {
        Some(k) => k,
        None => match ui::prompt_secret("Enter the 64-digit key: ")? {
            Some(t) => BackupKey::parse_hex(&t)?,
            None => bail!("no key: pass --key KEY_FILE or set CHATVAULT_KEY to the 64 hex digits"),
        },
    };
    if a.output.symlink_metadata().is_ok() {
        bail!("{} exists; choose a new output file", a.output.display());
    }
    let out_dir = match a.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if decrypt {
        let input = std::fs::File::open(&a.input)
            .with_context(|| format!("opening {}", a.input.display()))?;
        let d = match chatvault_whatsapp::decrypt_to_file(key.expose_bytes(), input, &out_dir) {
            Ok(d) => d,
            Err(chatvault_whatsapp::Error::WrongKey) => {
                return Err(WrongKey(
                    "wrong key: this 64-digit key does not decrypt this backup".into(),
                )
                .into());
            }
            Err(e) => return Err(e).with_context(|| format!("decrypting {}", a.input.display())),
        };
        let (len, kind) = (d.output_len(), d.kind());
        d.persist_noclobber(&a.output)
            .with_context(|| format!("writing {}", a.output.display()))?;
        println!(
            "decrypted {} → {} ({len} bytes, {kind:?})",
            a.input.display(),
            a.output.display()
        );
    } else {
        let db =
            std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
        let enc = chatvault_whatsapp::encrypt(
            key.expose_bytes(),
            &db,
            &chatvault_whatsapp::EncryptOptions::default(),
            &mut rand_core::OsRng,
        )?;
        let tmp = out_dir.join(format!(".chatvault-crypt15-{}", std::process::id()));
        write_private(&tmp, &enc)?;
        std::fs::hard_link(&tmp, &a.output)
            .with_context(|| format!("writing {}", a.output.display()))?;
        std::fs::remove_file(&tmp)?;
        println!(
            "encrypted {} → {} ({} bytes)",
            a.input.display(),
            a.output.display(),
            enc.len()
        );
    }
    Ok(exit::OK)
}
